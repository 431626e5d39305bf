"""The model-file contract: what an exported ``.onnx`` says about itself.

The exporter writes these fields into the ONNX ``metadata_props`` (string key -> string value),
one key per field under the ``cyclegan.`` prefix, values JSON-encoded; the runtime reads them
back and trusts them, never the file name. Bump :data:`SCHEMA_VERSION` on any incompatible
change; readers refuse versions newer than they know.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from runtime.reasons import first_line, not_a_file, not_onnx_reason

SCHEMA_NAME = "cyclegan-toolkit/model"
SCHEMA_VERSION = 1
PREFIX = "cyclegan."

IO_KINDS = ("float", "uint8")
PRECISIONS = ("fp32", "fp16", "int8")
DIRECTIONS = ("AtoB", "BtoA")


class MetadataError(ValueError):
    """A model file without (readable) cyclegan-toolkit metadata."""


@dataclass(frozen=True)
class ModelMetadata:
    """Self-description of an exported generator.

    ``io == "float"``: input/output float32 ``(N, 3, H, W)``, RGB, values in [-1, 1].
    ``io == "uint8"``: input/output uint8 ``(N, H, W, 3)`` in ``color_order`` (BGR by default,
    as OpenCV delivers frames), values 0..255; conversion happens inside the graph.
    H and W must be multiples of ``size_multiple`` (or equal ``static_size`` when set).
    """

    architecture: str                       # official name, e.g. "resnet_9blocks"
    generator: dict[str, Any]               # GeneratorSpec fields (family, ngf, n_blocks, ...)
    direction: str = "AtoB"                 # which generator of the pair: AtoB (G) or BtoA (F)
    source_domain: str = "A"
    target_domain: str = "B"
    io: str = "float"                       # float | uint8
    input_name: str = "input"
    output_name: str = "output"
    layout: str = "NCHW"                    # NCHW (float IO) | NHWC (uint8 IO)
    value_range: tuple[float, float] = (-1.0, 1.0)
    color_order: str = "RGB"                # channel order at the graph's edge
    size_multiple: int = 4
    min_size: int = 1                       # smallest H and W the graph accepts (ResNet: 8)
    static_size: tuple[int, int] | None = None  # (H, W) when exported with fixed shape
    batch: int | None = None                # fixed batch size, None = dynamic
    crop_size: int | None = None            # training crop size: the resolution it learned at
    precision: str = "fp32"                 # fp32 | fp16 | int8 (weights and compute)
    opset: int = 17
    portable_pad: bool = False              # reflect padding without the reflect Pad operator
    source_file: str = ""
    source_sha256: str = ""
    package_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: ``cyclegan.<field>`` -> JSON value, plus the schema."""
        props = {f"{PREFIX}schema": SCHEMA_NAME, f"{PREFIX}schema_version": str(SCHEMA_VERSION)}
        for key, value in asdict(self).items():
            props[PREFIX + key] = json.dumps(value, sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props``; raises :class:`MetadataError` naming ``source``."""
        if props.get(f"{PREFIX}schema") != SCHEMA_NAME:
            raise MetadataError(
                f"{source}: not a cyclegan-toolkit model (no {PREFIX}schema metadata); "
                "export it with cyclegan-export")
        try:
            version = int(props.get(f"{PREFIX}schema_version", "0"))
        except ValueError:
            raise MetadataError(f"{source}: unreadable metadata schema version") from None
        if version > SCHEMA_VERSION:
            raise MetadataError(
                f"{source}: metadata schema {version} is newer than this runtime understands "
                f"({SCHEMA_VERSION}); upgrade cyclegan-toolkit")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = props.get(PREFIX + f.name)
            if raw is None:
                continue
            try:
                values[f.name] = json.loads(raw)
            except json.JSONDecodeError:
                raise MetadataError(f"{source}: metadata field {f.name} is not valid JSON") \
                    from None
        for name in ("value_range", "static_size"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        try:
            meta = cls(**values)
        except TypeError as exc:
            raise MetadataError(f"{source}: incomplete metadata ({exc})") from None
        meta.validate(source)
        return meta

    def validate(self, source: str = "model") -> None:
        checks = [
            (self.io in IO_KINDS, f"io {self.io!r}"),
            (self.precision in PRECISIONS, f"precision {self.precision!r}"),
            (self.direction in DIRECTIONS, f"direction {self.direction!r}"),
            (self.layout in ("NCHW", "NHWC"), f"layout {self.layout!r}"),
            (self.color_order in ("RGB", "BGR"), f"color_order {self.color_order!r}"),
            (self.size_multiple >= 1, f"size_multiple {self.size_multiple}"),
        ]
        for ok, what in checks:
            if not ok:
                raise MetadataError(f"{source}: invalid metadata: {what}")

    def describe(self) -> str:
        """Human-readable summary, one field per line (for ``cyclegan-export --info``)."""
        lines = [f"schema: {SCHEMA_NAME} v{SCHEMA_VERSION}"]
        for key, value in asdict(self).items():
            lines.append(f"{key}: {json.dumps(value, sort_keys=True)}")
        return "\n".join(lines)


def metadata_or_none(props: dict[str, str], source: str = "model") -> ModelMetadata | None:
    """This toolkit's metadata in a model's ``metadata_props``, or None for a model without
    (or with unreadable) metadata: for callers that can run such a model anyway."""
    try:
        return ModelMetadata.from_props(props, source)
    except MetadataError:
        return None


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read the metadata of an ``.onnx`` file with onnxruntime (no onnx package needed)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise MetadataError(not_a_file(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        reason = not_onnx_reason(path) or f"not a loadable ONNX model ({first_line(exc)})"
        raise MetadataError(f"{path}: {reason}") from None
    return ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), str(path))
