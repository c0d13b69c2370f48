"""Device packages (``deploykit package``) and the TFLite helpers only they need: the
flatbuffer op reader that flags what older runtimes lack, and the TFLite metadata writer."""

from deploykit.package.device import device_targets, package

__all__ = ["device_targets", "package"]
