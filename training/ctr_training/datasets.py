"""Dataset specs: how to read one shape of click log, as configuration rather than code.

A spec names the file format (delimiter, header) and every column in file
order. It gives each column a role: the label, an integer feature, a
categorical feature, an optional id carried through as a string, or an
optional time column whose parsed value orders the rows in time. The feature job, training
and the promotion gate all read a dataset through its spec, so Criteo (TSV,
no header) and Avazu (CSV with a header, a 20-digit id, ``hour`` as
YYMMDDHH) share one code path.

``params.yaml`` holds the specs under ``datasets``; ``CRITEO`` and ``AVAZU``
below are the same specs for callers that run without a params file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctr_inference.errors import CtrError

# Features derived from the parsed time column, by name.
TIME_FEATURES = ("hour_of_day", "day_of_week")
EVENT_TIME = "event_time"
FORMATS = ("tsv", "csv")
_DELIMITERS = {"tsv": "\t", "csv": ","}


class DatasetSpecError(CtrError):
    """A dataset spec in the params file is incomplete or contradicts itself."""


@dataclass(frozen=True)
class DatasetSpec:
    """One click-log shape: its format, its columns in file order and their roles."""

    name: str
    format: str
    header: bool
    columns: tuple[str, ...]
    label: str
    integer: tuple[str, ...]
    categorical: tuple[str, ...]
    registered_model: str
    id_column: str | None = None
    time_column: str | None = None
    time_format: str | None = None
    time_features: tuple[str, ...] = field(default_factory=tuple)

    @property
    def delimiter(self) -> str:
        return _DELIMITERS[self.format]

    @property
    def feature_columns(self) -> list[str]:
        """Model features in the order the feature job writes them and the model reads them."""
        return [*self.integer, *self.categorical, *self.time_features]

    def file_columns(self, labelled: bool) -> list[str]:
        """Columns of one line in file order; unlabelled files lack the label column."""
        return [c for c in self.columns if labelled or c != self.label]

    def header_line(self, labelled: bool) -> str:
        return self.delimiter.join(self.file_columns(labelled))

    def to_dict(self) -> dict:
        """Return the spec as it is written in ``params.yaml``."""
        data = {
            "format": self.format,
            "header": self.header,
            "columns": list(self.columns),
            "label": self.label,
            "integer": list(self.integer),
            "categorical": list(self.categorical),
            "registered_model": self.registered_model,
        }
        if self.id_column:
            data["id"] = self.id_column
        if self.time_column:
            data["time"] = {"column": self.time_column, "format": self.time_format,
                            "features": list(self.time_features)}
        return data

    @classmethod
    def from_dict(cls, name: str, data: dict) -> DatasetSpec:
        """Build and validate a spec from its ``params.yaml`` form.

        Raises:
            DatasetSpecError: a key is missing, a column has no place in the file
                or two roles, the format is unknown, or a time feature is unknown.
        """
        if not isinstance(data, dict):
            raise DatasetSpecError(f"dataset {name!r}: expected a mapping, got {type(data).__name__}")
        required = ("format", "header", "columns", "label", "integer", "categorical", "registered_model")
        missing = [key for key in required if key not in data]
        if missing:
            raise DatasetSpecError(f"dataset {name!r} lacks {', '.join(missing)}")
        time = data.get("time") or {}
        spec = cls(
            name=name,
            format=str(data["format"]),
            header=bool(data["header"]),
            columns=tuple(data["columns"]),
            label=str(data["label"]),
            integer=tuple(data["integer"]),
            categorical=tuple(data["categorical"]),
            registered_model=str(data["registered_model"]),
            id_column=data.get("id"),
            time_column=time.get("column"),
            time_format=time.get("format"),
            time_features=tuple(time.get("features", ())),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check that every role names a column of the file and no column has two roles.

        Raises:
            DatasetSpecError: with the dataset name and the offending column.
        """
        if self.format not in FORMATS:
            raise DatasetSpecError(f"dataset {self.name!r}: format {self.format!r} is not one of {FORMATS}")
        if len(set(self.columns)) != len(self.columns):
            raise DatasetSpecError(f"dataset {self.name!r}: columns repeat a name")
        roles = [self.label, *self.integer, *self.categorical]
        roles += [c for c in (self.id_column, self.time_column) if c]
        for column in roles:
            if column not in self.columns:
                raise DatasetSpecError(f"dataset {self.name!r}: column {column!r} is not in columns")
        if len(set(roles)) != len(roles):
            repeated = sorted({c for c in roles if roles.count(c) > 1})
            raise DatasetSpecError(f"dataset {self.name!r}: columns {repeated} have more than one role")
        if self.time_column and not self.time_format:
            raise DatasetSpecError(f"dataset {self.name!r}: time column {self.time_column!r} has no format")
        unknown = [f for f in self.time_features if f not in TIME_FEATURES]
        if unknown:
            raise DatasetSpecError(f"dataset {self.name!r}: unknown time features {unknown}; "
                                   f"known: {list(TIME_FEATURES)}")
        if self.time_features and not self.time_column:
            raise DatasetSpecError(f"dataset {self.name!r}: time features need a time column")
        clashes = {EVENT_TIME, "row_id", "label"} & set(self.feature_columns)
        if clashes:
            raise DatasetSpecError(f"dataset {self.name!r}: feature names {sorted(clashes)} are reserved")


def spec_from_params(params: dict, name: str | None = None) -> DatasetSpec:
    """Return the spec that ``params['dataset']`` (or ``name``) selects from ``params['datasets']``.

    Raises:
        DatasetSpecError: the name is not a key of ``datasets``.
    """
    name = name or params.get("dataset")
    specs = params.get("datasets") or {}
    if name not in specs:
        raise DatasetSpecError(f"dataset {name!r} is not defined under datasets (defined: {sorted(specs)})")
    return DatasetSpec.from_dict(name, specs[name])


_CRITEO_INTEGER = tuple(f"I{i}" for i in range(1, 14))
_CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))

CRITEO = DatasetSpec(
    name="criteo",
    format="tsv",
    header=False,
    columns=("label", *_CRITEO_INTEGER, *_CRITEO_CATEGORICAL),
    label="label",
    integer=_CRITEO_INTEGER,
    categorical=_CRITEO_CATEGORICAL,
    registered_model="ctr-criteo",
)

AVAZU = DatasetSpec(
    name="avazu",
    format="csv",
    header=True,
    columns=("id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
             "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
             "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"),
    label="click",
    # Small integer codes (positions, types, banner sizes) split well as numbers.
    integer=("C1", "banner_pos", "device_type", "device_conn_type", "C15", "C16", "C18"),
    # Hashed ids and high-cardinality codes are frequency-encoded like Criteo's categoricals.
    categorical=("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
                 "device_id", "device_ip", "device_model", "C14", "C17", "C19", "C20", "C21"),
    registered_model="ctr-avazu",
    id_column="id",
    time_column="hour",
    time_format="yyMMddHH",
    time_features=TIME_FEATURES,
)

BUILTIN = {spec.name: spec for spec in (CRITEO, AVAZU)}
