"""The recogniser cut down to the characters of Latin-script text. The bundled model scores
every text column against 18,710 classes, most of them Chinese and Japanese; for the other
languages it reads, a copy whose last layer keeps only the 1,750 classes below U+2E80 (Latin
and Greek letters, digits, punctuation, symbols) reads the same text in a quarter less
time. The copy is made from the bundled file by editing its protobuf on the wire (no onnx
package needed) and kept in a cache folder, named by the bundled file's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from handlers.atomic import write_atomic

LAST_CHAR = 0x2E80  # CJK radicals; the Chinese, Japanese and fullwidth forms come after
VERSION = 1  # of the cutting; a new one makes a new copy

# Field numbers of onnx.proto3 that the cut walks through.
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 5, 11, 12, 13
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_RAW_DATA = 1, 2, 9
FLOAT = 1  # TensorProto.DataType
VALUE_TYPE, TYPE_TENSOR, TENSOR_SHAPE, SHAPE_DIM, DIM_VALUE = 2, 1, 2, 1, 1
ENTRY_KEY, ENTRY_VALUE = 1, 2
VARINT, LENGTH = 0, 2

Field = tuple[int, int, bytes | int]  # number, wire type, payload (a varint as its value)


def cut_model(bundled: Path, cache: Path) -> Path:
    """The cut copy of the recognition model `bundled`, made in `cache` on first use."""
    data = bundled.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = cache / f"{bundled.stem}.latin{VERSION}.{digest}.onnx"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        write_atomic(path, cut(data))
    return path


def cut(model: bytes) -> bytes:
    """`model` (a serialised ModelProto) with only the classes of kept characters. Raises
    ValueError if it is not a recogniser laid out as expected."""
    fields = list(parse(model))
    characters = metadata(fields, "character").splitlines()
    classes = len(characters) + 2  # CTC's blank first, a space last
    keep = [0] + [n + 1 for n, char in enumerate(characters) if kept(char)] + [classes - 1]
    kept_chars = "\n".join(characters[n - 1] for n in keep[1:-1])
    cutter = Cutter(classes, keep)
    edited = []
    for number, wire, payload in fields:
        if number == MODEL_GRAPH and isinstance(payload, bytes):
            payload = cutter.graph(payload)
        elif number == MODEL_METADATA and isinstance(payload, bytes):
            payload = with_value(payload, "character", kept_chars)
        edited.append((number, wire, payload))
    if cutter.tensors == 0 or cutter.shapes == 0:
        raise ValueError(f"no tensor or shape with {classes} classes: not a known recogniser")
    return serialise(edited)


def kept(char: str) -> bool:
    return len(char) == 1 and ord(char) < LAST_CHAR


class Cutter:
    """Cuts every tensor and shape whose last dimension is the class count."""

    def __init__(self, classes: int, keep: list[int]) -> None:
        self.classes = classes
        self.keep = keep
        self.tensors = 0
        self.shapes = 0

    def graph(self, graph: bytes) -> bytes:
        edits = {
            GRAPH_INITIALIZER: self.tensor,
            GRAPH_INPUT: self.value_info,
            GRAPH_OUTPUT: self.value_info,
            GRAPH_VALUE_INFO: self.value_info,
        }
        return serialise(
            (number, wire, edits[number](payload))
            if number in edits and isinstance(payload, bytes)
            else (number, wire, payload)
            for number, wire, payload in parse(graph)
        )

    def tensor(self, tensor: bytes) -> bytes:
        import numpy as np

        fields = list(parse(tensor))
        dims = [d for number, _, value in fields if number == TENSOR_DIMS for d in ints(value)]
        if not dims or dims[-1] != self.classes:
            return tensor
        types = [value for number, _, value in fields if number == TENSOR_DATA_TYPE]
        raw = [value for number, _, value in fields if number == TENSOR_RAW_DATA]
        if types != [FLOAT] or len(raw) != 1 or not isinstance(raw[0], bytes):
            raise ValueError("a tensor of the class count that is not raw float32 data")
        values = np.frombuffer(raw[0], dtype="<f4").reshape(dims)[..., self.keep]
        self.tensors += 1
        dims[-1] = len(self.keep)
        rest = [f for f in fields if f[0] not in (TENSOR_DIMS, TENSOR_RAW_DATA)]
        dims_fields: list[Field] = [(TENSOR_DIMS, VARINT, d) for d in dims]
        return serialise([*dims_fields, *rest, (TENSOR_RAW_DATA, LENGTH, values.tobytes())])

    def value_info(self, info: bytes) -> bytes:
        path = (VALUE_TYPE, TYPE_TENSOR, TENSOR_SHAPE)
        return nested(info, path, self.shape)

    def shape(self, shape: bytes) -> bytes:
        fields = list(parse(shape))
        dims = [i for i, (number, _, _) in enumerate(fields) if number == SHAPE_DIM]
        if not dims:
            return shape
        number, wire, last = fields[dims[-1]]
        assert isinstance(last, bytes)
        value = [v for n, _, v in parse(last) if n == DIM_VALUE]
        if value != [self.classes]:
            return shape
        self.shapes += 1
        fields[dims[-1]] = (number, wire, serialise([(DIM_VALUE, VARINT, len(self.keep))]))
        return serialise(fields)


def nested(message: bytes, path: tuple[int, ...], edit: Callable[[bytes], bytes]) -> bytes:
    """`message` with `edit` applied to the submessage at the field numbers `path`."""
    if not path:
        return edit(message)
    return serialise(
        (number, wire, nested(payload, path[1:], edit))
        if number == path[0] and isinstance(payload, bytes)
        else (number, wire, payload)
        for number, wire, payload in parse(message)
    )


def metadata(fields: list[Field], key: str) -> str:
    for number, _, payload in fields:
        if number == MODEL_METADATA and isinstance(payload, bytes):
            entry = {n: v for n, _, v in parse(payload)}
            value = entry.get(ENTRY_VALUE)
            if entry.get(ENTRY_KEY) == key.encode() and isinstance(value, bytes):
                return value.decode()
    raise ValueError(f"the model has no {key!r} metadata")


def with_value(entry: bytes, key: str, value: str) -> bytes:
    fields = list(parse(entry))
    if (ENTRY_KEY, LENGTH, key.encode()) not in fields:
        return entry
    return serialise([(ENTRY_KEY, LENGTH, key.encode()), (ENTRY_VALUE, LENGTH, value.encode())])


def ints(value: bytes | int) -> list[int]:
    """A repeated int64 field's values, whether packed or not."""
    if isinstance(value, int):
        return [value]
    values, at = [], 0
    while at < len(value):
        number, at = varint(value, at)
        values.append(number)
    return values


def parse(message: bytes) -> Iterator[Field]:
    """The fields of a protobuf message, in order: varints as ints, the rest as bytes."""
    at, end = 0, len(message)
    while at < end:
        key, at = varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = varint(message, at)
            yield number, wire, value
            continue
        if wire == LENGTH:
            size, at = varint(message, at)
        elif wire in (1, 5):  # fixed 64 or 32 bits
            size = 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by onnx")
        if at + size > end:
            raise ValueError("a protobuf field runs past the end of its message")
        yield number, wire, message[at : at + size]
        at += size


def serialise(fields: Iterable[Field]) -> bytes:
    out = bytearray()
    for number, wire, payload in fields:
        out += encode((number << 3) | wire)
        if isinstance(payload, int):
            out += encode(payload)
        else:
            if wire == LENGTH:
                out += encode(len(payload))
            out += payload
    return bytes(out)


def varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("a protobuf varint runs past the end of its message")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def encode(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
