"""cecq's named errors, in one place: every message names the value, file or id at fault.

Bad input and bad configuration (:data:`PERMANENT_ERRORS`) fail the same way every time,
so orchestrators should not retry them; storage and cluster failures may be retried.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class UntrustedModelError(ConfigError):
    """A store names a base model that the model-trust settings do not allow to be loaded."""


class DataError(ValueError):
    """Input data is malformed; the message names the file, line or id at fault."""


class CorruptArtifactError(DataError):
    """A stored artifact is truncated or unreadable. The message names the file and says how to
    recover: a rerun of the step that wrote it, where the artifact is derived."""


class StorageError(RuntimeError):
    """The storage root is unreachable or full, or a path would leave it. Work committed
    before the error is kept; a rerun resumes from it."""


class StoreBusyError(RuntimeError):
    """Another run holds the store's lease (the message names it), or this run lost it."""


class NoCatalogError(FileNotFoundError):
    """The storage root has no published catalog yet."""


class RecordVersionError(ValueError):
    """A stored record was written by a newer cecq than this one reads."""


def check_version(what: str, found: int, supported: int) -> int:
    """``found``, unless it is newer than the ``supported`` version: then refuse, naming both."""
    if found > supported:
        raise RecordVersionError(
            f"{what} has format version {found}; this cecq reads up to version {supported}: "
            "upgrade cecq to read this store"
        )
    return found


class ModelNotFoundError(FileNotFoundError):
    """A base model could not be resolved offline or loaded."""


class ModelLoadError(RuntimeError):
    """The embedding actors could not load the base model (retrying cannot help)."""


class ShardFailedError(RuntimeError):
    """A shard failed on every attempt."""


class DimensionMismatchError(ValueError):
    """The decoder's input dimension does not match the embeddings given to it."""


class NoIndexStructureError(ConfigError):
    """A store's quantizer kind has no FAISS index structure."""


class IndexFileError(DataError):
    """A search index file does not belong to the catalog version or codebooks it is used
    with, or is truncated or corrupt; the message names the file and the version."""


PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    ConfigError,
    ModelNotFoundError,
    ModelLoadError,
    DimensionMismatchError,
    RecordVersionError,
    StoreBusyError,
)
