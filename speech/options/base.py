"""The machinery every options class shares: frozen models, the two-part job options built
from one flat mapping, YAML loading and errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python


class OptionsError(ValueError):
    """Invalid options; the message names the field and what is allowed."""


class Options(BaseModel):
    """A frozen set of options; a field it does not declare is an error naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ActorPool(Options):
    """A fixed (``min == max``) or autoscaling pool of model actors."""

    min: int = Field(1, ge=1)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorPool:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


def actor_pool(actors: int | ActorPool) -> ActorPool:
    """``actors`` (N or a pool) as a pool."""
    return actors if isinstance(actors, ActorPool) else ActorPool(min=actors, max=actors)


class JobOptions(Options):
    """A job's options in two parts: the first field is the part that decides the output rows
    (a resumed run must agree on it: it is the output's ``_job.json``), the second, ``run``, says
    where and how the job runs (inputs, output, cluster, actors, batching), which may change
    between runs.

    Built from ONE flat mapping (a YAML config, the command line): each key goes to the part
    that declares it, so the parts' field names must be disjoint (checked when a subclass is
    defined). Reading is flat too: ``options.model`` is ``options.<rows part>.model`` and
    ``options.threads`` is ``options.run.threads``, so code that reads options needs not know
    which part holds a field.
    """

    #: field name -> name of the part that declares it (filled in for each subclass).
    _owners: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        parts = cls.parts()
        if not parts:
            return
        if list(parts)[-1] != "run" or len(parts) != 2:
            raise TypeError(f"{cls.__name__}: declare exactly two parts, the rows part first, then run")
        owners: dict[str, str] = {}
        for part, part_type in parts.items():
            for name in part_type.model_fields:
                if name in owners or name in parts:
                    raise TypeError(f"{cls.__name__}: option {name!r} is declared by more than one part")
                owners[name] = part
        cls._owners = owners

    @classmethod
    def parts(cls) -> dict[str, type[Options]]:
        """Part name -> its options class, the rows part first."""
        return {name: field.annotation for name, field in cls.model_fields.items()}  # type: ignore[misc]

    @classmethod
    def rows_part(cls) -> str:
        """The name of the part that decides the output rows."""
        return next(iter(cls.model_fields))

    @classmethod
    def fields(cls) -> dict[str, FieldInfo]:
        """Every option of the job, flat: name -> its pydantic field (rows part first)."""
        return {name: field for part in cls.parts().values() for name, field in part.model_fields.items()}

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """A flat mapping -> one mapping per part. Keys no part declares go to the rows part,
        whose validation then names them ("extra inputs are not permitted")."""
        if not isinstance(data, Mapping) or (data and set(data) <= set(cls.model_fields)):
            return data  # already in parts (e.g. model_validate of a dump)
        split: dict[str, dict[str, Any]] = {part: {} for part in cls.model_fields}
        for key, value in data.items():
            split[cls._owners.get(key, cls.rows_part())][key] = value
        return split

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            parts = self.__dict__
            owner = type(self)._owners.get(name)
            if owner is not None and owner in parts:
                return getattr(parts[owner], name)
            for part in type(self).model_fields:  # methods and properties of a part
                if part in parts and hasattr(type(parts[part]), name):
                    return getattr(parts[part], name)
        return super().__getattr__(name)  # type: ignore[misc]

    def flat(self) -> dict[str, Any]:
        """The options as one flat mapping of the values that were given (not defaults)."""
        return {key: value for part in type(self).model_fields
                for key, value in getattr(self, part).model_dump(exclude_unset=True).items()}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with the flat ``update`` applied and validated (pydantic's own would set the
        keys on the pair unchecked)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate({**self.flat(), **update})

    def result_options(self) -> dict[str, Any]:
        """The options that decide what the output rows contain: the rows part, as JSON.

        A resumed run must agree with the earlier runs on these; where and how fast the job
        runs (the ``run`` part) may change between runs.
        """
        return getattr(self, type(self).rows_part()).model_dump(mode="json")


    @classmethod
    def result_defaults(cls) -> dict[str, Any]:
        """Each option of the rows part that has a default, as JSON (see :meth:`result_options`)."""
        fields = cls.parts()[cls.rows_part()].model_fields
        return {name: to_jsonable_python(field.get_default(call_default_factory=True))
                for name, field in fields.items() if not field.is_required()}


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping (no validation yet)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise OptionsError(f"cannot read config {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise OptionsError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise OptionsError(f"config {path} must be a mapping of option names to values")
    return data


def load_options(cls: type[Options], config: str | Path | None, overrides: Mapping[str, Any]) -> Any:
    """Validate ``config`` (YAML path) overlaid with non-None ``overrides`` into ``cls``."""
    values = read_config(config) if config else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise OptionsError(describe(err, cls, source=str(config) if config else None)) from err


def describe(err: ValidationError, cls: type[Options], source: str | None = None) -> str:
    """``err`` as one line naming each bad field as the flat mapping spells it."""
    where = f" in {source}" if source else ""
    parts = set(cls.model_fields) if issubclass(cls, JobOptions) else set()
    errors = []
    for error in err.errors():
        loc = list(error["loc"])
        if loc and loc[0] in parts:
            loc = loc[1:]  # the part is an implementation detail: the mapping is flat
        errors.append((loc, error))
    # A value of a union type (``actors: int | ActorPool``) that one member's own check refused:
    # that check says what is wrong; the other members' type errors only add noise.
    checked = {loc[0] for loc, error in errors if loc and error["type"] == "value_error"}
    problems = []
    for loc, error in errors:
        if loc and loc[0] in checked and error["type"] != "value_error":
            continue
        message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        if error["type"] == "value_error" and len(loc) > 1 and "[" in str(loc[-1]):
            loc = loc[:-1]  # the union member's tag, e.g. "function-after[_ordered(), ActorPool]"
        field = ".".join(str(part) for part in loc)
        # A check of several fields together has no location; its message names the fields.
        problems.append(f"{field}: {message}" if field else message)
    return f"invalid options{where}: " + "; ".join(problems)
