"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class JaxtalkError(Exception):
  """A problem with the user's input (file, config, arguments), not a bug in jaxtalk."""

  exit_code = 2


class NoFaceError(JaxtalkError):
  """No face where one is required (names the frame)."""


class VideoReadError(JaxtalkError):
  """A file that cannot be read as video: missing, corrupt, or without a video stream."""


class AudioReadError(JaxtalkError):
  """A file that cannot be read as audio: missing, corrupt, no audio stream, or silent."""


class ConfigError(JaxtalkError):
  """A config file or override that is wrong (unknown key, bad type, missing file)."""


class WeightsError(JaxtalkError):
  """Pretrained weights that are missing or do not match the expected layout."""
