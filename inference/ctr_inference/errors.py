"""Exceptions raised by the inference side of the platform.

CtrError
 ├── FeatureContractError      a partition does not fit the model's feature list
 │    ├── MissingFeatureError
 │    └── FeatureDtypeError
 ├── BundleError               a model bundle cannot be trusted or loaded
 │    ├── BundleNotFoundError
 │    ├── BundleChecksumError
 │    └── BundleIncompatibleError
 ├── MessageError              a queue message is not a valid score request
 ├── PartitionError            an input partition cannot be read
 │    ├── InputNotFoundError
 │    ├── UnknownFormatError
 │    └── CorruptPartitionError
 └── ModelUnavailableError     the model version a run expects cannot be loaded
"""

from __future__ import annotations


class CtrError(Exception):
    """Base class of every error the platform raises on purpose."""


class FeatureContractError(CtrError):
    """A partition's columns do not match the features the model was trained on."""


class MissingFeatureError(FeatureContractError):
    """A feature the model needs is not a column of the partition."""

    def __init__(self, name: str):
        super().__init__(f"missing feature column {name!r}")
        self.name = name


class FeatureDtypeError(FeatureContractError):
    """A feature column has a type that cannot be cast to the model's dtype."""

    def __init__(self, name: str, expected: str, received: str):
        super().__init__(
            f"feature column {name!r} has type {received}, expected {expected} "
            "(integer or floating-point columns are accepted)"
        )
        self.name = name


class BundleError(CtrError):
    """A model bundle is missing, damaged or made for another runtime."""


class BundleNotFoundError(BundleError):
    """The bundle directory, file or object does not exist."""


class BundleChecksumError(BundleError):
    """A bundle file's SHA-256 differs from the one in its metadata."""


class BundleIncompatibleError(BundleError):
    """The bundle was made with a library version this runtime cannot load."""


class MessageError(CtrError):
    """A queue message is not a score request this worker understands."""


class PartitionError(CtrError):
    """An input partition is missing or is not readable Parquet."""


class InputNotFoundError(PartitionError):
    """The input partition's object does not exist."""


class UnknownFormatError(PartitionError):
    """The input object is not Parquet: it has no Parquet magic bytes at either end."""


class CorruptPartitionError(PartitionError):
    """The input object looks like Parquet but cannot be decoded (truncated or damaged)."""


class ModelUnavailableError(CtrError):
    """The model version a run expects cannot be loaded, so its partitions cannot be scored."""
