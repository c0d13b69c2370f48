"""TFLite Model Metadata: labels and normalization inside the ``.tflite``, for Android.

Android's TFLite Task Library and ``MetadataExtractor`` (litert-metadata) read a
``ModelMetadata`` flatbuffer (tflite-support's ``metadata_schema.fbs``, file identifier
``M001``) stored in a model buffer that a ``Model.metadata`` entry named ``TFLITE_METADATA``
points to. Label files are stored uncompressed in a zip appended to the model. This module
writes exactly that with the ``flatbuffers`` builder, so packaging needs no tflite-support.
The interpreter ignores metadata: the model computes the same numbers as before.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from deploykit._fs import fixed_zip_entry
from deploykit._lazy import require
from deploykit.errors import BundleError

NAME = "TFLITE_METADATA"
# enum values from metadata_schema.fbs
FEATURE_PROPERTIES = 1  # ContentProperties union
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
TENSOR_AXIS_LABELS = 2  # AssociatedFileType


@dataclass(frozen=True)
class TensorInfo:
    name: str
    description: str
    mean: tuple[float, ...] | None = None  # NormalizationOptions: (x - mean) / std
    std: tuple[float, ...] | None = None
    min: tuple[float, ...] | None = None  # Stats
    max: tuple[float, ...] | None = None
    labels_file: str | None = None  # TENSOR_AXIS_LABELS


def _table(b, slots: dict[int, tuple[str, object]]) -> int:
    """One flatbuffer table; slots maps slot id -> ("offset" | "u8" | "i8", value)."""
    b.StartObject(max(slots) + 1 if slots else 0)
    for slot, (kind, value) in sorted(slots.items()):
        if kind == "offset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        else:
            b.PrependInt8Slot(slot, value, 0)
    return b.EndObject()


def _vector(b, items: list, kind: str) -> int:
    b.StartVector(4, len(items), 4)
    for item in reversed(items):
        b.PrependFloat32(float(item)) if kind == "f32" else b.PrependUOffsetTRelative(item)
    return b.EndVector()


def _tensor(b, t: TensorInfo) -> int:
    slots: dict[int, tuple[str, object]] = {0: ("offset", b.CreateString(t.name)),
                                            1: ("offset", b.CreateString(t.description))}
    features = _table(b, {})
    slots[3] = ("offset", _table(b, {0: ("u8", FEATURE_PROPERTIES), 1: ("offset", features)}))
    if t.mean is not None:
        norm = _table(b, {0: ("offset", _vector(b, list(t.mean), "f32")),
                          1: ("offset", _vector(b, list(t.std), "f32"))})
        unit = _table(b, {0: ("u8", NORMALIZATION_OPTIONS), 1: ("offset", norm)})
        slots[4] = ("offset", _vector(b, [unit], "offsets"))
    if t.max is not None:
        slots[5] = ("offset", _table(b, {0: ("offset", _vector(b, list(t.max), "f32")),
                                         1: ("offset", _vector(b, list(t.min), "f32"))}))
    if t.labels_file:
        f = _table(b, {0: ("offset", b.CreateString(t.labels_file)),
                       1: ("offset", b.CreateString("class labels, one per line, in output order")),
                       2: ("i8", TENSOR_AXIS_LABELS)})
        slots[6] = ("offset", _vector(b, [f], "offsets"))
    return _table(b, slots)


def build(name: str, description: str, version: str, inputs: list[TensorInfo],
          outputs: list[TensorInfo]) -> bytes:
    """A ModelMetadata flatbuffer (min_parser_version 1.0.0: only 1.0 features are used)."""
    flatbuffers = require("flatbuffers", extra="edge", purpose="to write TFLite metadata")
    b = flatbuffers.Builder(1024)
    ins = _vector(b, [_tensor(b, t) for t in inputs], "offsets")
    outs = _vector(b, [_tensor(b, t) for t in outputs], "offsets")
    subgraph = _vector(b, [_table(b, {2: ("offset", ins), 3: ("offset", outs)})], "offsets")
    root = _table(b, {0: ("offset", b.CreateString(name)),
                      1: ("offset", b.CreateString(description)),
                      2: ("offset", b.CreateString(version)),
                      3: ("offset", subgraph), 7: ("offset", b.CreateString("1.0.0"))})
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def embed(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``metadata`` attached and ``files`` zipped after it (deterministically)."""
    require("ai_edge_litert", extra="edge", purpose="to write TFLite metadata")
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    if not s.Model.ModelBufferHasIdentifier(model, 0):
        raise BundleError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(model, 0))
    if any(buf.offset for buf in m.buffers or []):
        raise BundleError("this .tflite keeps its weights outside the flatbuffer; "
                          "metadata cannot be added without breaking them")
    m.buffers, m.metadata = m.buffers or [], m.metadata or []
    meta = s.BufferT()
    meta.data = metadata
    old = [x for x in m.metadata if _name(x) == NAME]
    if old:  # re-packaging: replace the metadata, keep everything else
        m.buffers[old[0].buffer] = meta
    else:
        m.buffers.append(meta)
        entry = s.MetadataT()
        entry.name, entry.buffer = NAME, len(m.buffers) - 1
        m.metadata.append(entry)
    m.buffers = [_Aligned(buf) for buf in m.buffers]
    b = flatbuffers.Builder(len(model) + len(metadata) + 4096)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for fname, data in sorted(files.items()):
            z.writestr(fixed_zip_entry(fname, zipfile.ZIP_STORED), data)  # readers want STORED
    return out.getvalue()


def _name(entry) -> str:
    return entry.name.decode() if isinstance(entry.name, bytes) else entry.name


class _Aligned:
    """A model buffer packed with its bytes 16-byte aligned, as the TFLite schema asks
    (``force_align: 16``); the generated object API aligns to 1 byte, which would leave
    weights where XNNPACK must copy them."""

    def __init__(self, buf) -> None:
        self.buf = buf

    def Pack(self, b):  # noqa: N802 -- the flatbuffers object-API name
        from ai_edge_litert import schema_py_generated as s

        data = None
        if self.buf.data is not None and len(self.buf.data):
            raw = bytes(bytearray(self.buf.data))
            b.StartVector(1, len(raw), 16)
            b.head -= len(raw)
            b.Bytes[b.head:b.head + len(raw)] = raw
            data = b.EndVector()
        s.BufferStart(b)
        if data is not None:
            s.BufferAddData(b, data)
        s.BufferAddOffset(b, self.buf.offset)
        s.BufferAddSize(b, self.buf.size)
        return s.BufferEnd(b)


def io_names(model: bytes) -> tuple[list[str], list[str]]:
    """Input and output names in the order of the main subgraph's tensors (the order the
    metadata lists them in): signature names where the model has a signature, else tensor names."""
    require("ai_edge_litert", extra="edge", purpose="to read a .tflite")
    from ai_edge_litert import schema_py_generated as s

    m = s.Model.GetRootAs(model, 0)
    g = m.Subgraphs(0)
    names = {}
    if m.SignatureDefsLength():
        sig = m.SignatureDefs(0)
        for i in range(sig.InputsLength()):
            names[sig.Inputs(i).TensorIndex()] = sig.Inputs(i).Name().decode()
        for i in range(sig.OutputsLength()):
            names[sig.Outputs(i).TensorIndex()] = sig.Outputs(i).Name().decode()

    def name(t: int) -> str:
        return names.get(t) or g.Tensors(t).Name().decode()

    return ([name(g.Inputs(i)) for i in range(g.InputsLength())],
            [name(g.Outputs(i)) for i in range(g.OutputsLength())])
