"""Configuration types and how a configuration is assembled.

Precedence, highest first: command-line flags > environment (``PENSIEVE_<SECTION>_<KEY>``) >
config file (JSON or TOML) > defaults. Validation reports every problem with its dotted key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from pensieve.core.errors import ConfigError, ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

__all__ = [
    "Config",
    "DeviceSettings",
    "EngineSettings",
    "LimitSettings",
    "ModelSettings",
    "SamplingSettings",
    "ServerSettings",
    "build_config",
    "env_overrides",
    "read_config_file",
]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section):
    """Where and how the HTTP server listens."""

    host: str = "127.0.0.1"
    port: Port = 8080
    # Keys accepted on /v1/*. Empty means: loopback only, with the seed's development keys.
    api_keys: list[str] = []
    pid_file: str | None = None
    shutdown_grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Browser origins allowed to call the API (CORS); empty sends no CORS headers at all.
    cors_origins: list[str] = []


class LimitSettings(_Section):
    """Bounds that keep one client from hurting the others."""

    max_body_bytes: Positive = 32 * 1024 * 1024
    max_header_bytes: Positive = 32 * 1024
    max_messages: Positive = 10_000
    max_tools: Positive = 1_000
    max_output_tokens: Positive = 32_000
    max_waiting: Annotated[int, msgspec.Meta(ge=0)] = 64
    max_concurrent_requests: Positive = 128
    # Per API key: a bucket of ``rate_limit_burst`` requests refilled at this rate; 0 turns it off.
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 600
    rate_limit_burst: Positive = 100
    request_timeout_seconds: PositiveFloat = 600.0
    # Slow clients: the whole body must arrive within read_timeout; an idle connection (or one
    # still sending its request line and headers) is closed after keep_alive_timeout.
    read_timeout_seconds: PositiveFloat = 60.0
    keep_alive_timeout_seconds: PositiveFloat = 5.0


class ModelSettings(_Section):
    """The models to serve. ``path`` None means the embedded default (SmolLM2-135M-Instruct).

    ``aliases`` maps extra names to model names; the list form (extra names of the default
    model) is the older spelling and still accepted.
    """

    path: str | None = None
    id: str | None = None
    aliases: dict[str, str] | list[str] = {}
    context_length: Positive | None = None
    # GGUF files here are served too (default: $XDG_DATA_HOME/pensieve/models or ~/.local/share/...).
    directory: str | None = None
    # A model other than the default is unloaded after this long without requests; 0: never.
    keep_alive_seconds: Annotated[float, msgspec.Meta(ge=0)] = 300.0


class DeviceSettings(_Section):
    """Which MLX device runs the model and how much memory it may use."""

    device: Literal["auto", "gpu", "cpu"] = "auto"
    memory_fraction: Fraction = 0.75
    memory_limit_bytes: Positive | None = None
    cache_limit_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    cache_dir: str | None = None
    # Pensieve's AVX2 quantized-matmul kernels on x86-64 Linux CPUs (built once, in the user's
    # cache: ~/.cache/pensieve/kernels, whatever cache_dir says).
    cpu_kernels: bool = True


class EngineSettings(_Section):
    """How the generation thread shares the model between requests."""

    # Requests decoded together in one batch; more wait (up to limits.max_waiting).
    max_running: Positive = 8
    # Newcomers' prompts are read this many tokens at a time between decode steps.
    prefill_chunk_tokens: Positive = 256
    # KV state of seen prompt prefixes kept for reuse (LRU beyond this); 0 turns the cache off.
    prefix_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 512 * 1024 * 1024


class SamplingSettings(_Section):
    """How a request that leaves sampling out is sampled: the API's own defaults unless configured.

    The anthropic SDK 2.x has no sampling arguments and Claude Code sends none, so most requests
    get these; a small local model often answers better cooler than the API's temperature 1.0.
    """

    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    # 0: no top-k cut.
    top_k: Annotated[int, msgspec.Meta(ge=0)] = 0


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    model: ModelSettings = msgspec.field(default_factory=ModelSettings)
    device: DeviceSettings = msgspec.field(default_factory=DeviceSettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    sampling: SamplingSettings = msgspec.field(default_factory=SamplingSettings)


_SECTIONS: dict[str, type[_Section]] = {
    f.name: f.type
    for f in msgspec.structs.fields(Config)  # type: ignore[misc]
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file (by extension; TOML unless it ends in ``.json``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem("<file>", f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("<file>", f"{path} is not valid: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("<file>", "the top level must be an object/table")])
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Dotted-key settings from ``PENSIEVE_<SECTION>_<KEY>`` variables.

    Lists are comma-separated (``a,b``); mappings are comma-separated ``name=value`` pairs.
    """
    found: dict[str, Any] = {}
    for section, struct in _SECTIONS.items():
        for field in msgspec.structs.fields(struct):
            value = environ.get(f"PENSIEVE_{section}_{field.name}".upper())
            if value is None:
                continue
            if _is_list(field.type) or _is_mapping(field.type):
                found[f"{section}.{field.name}"] = _split(value, mapping=_is_mapping(field.type))
            else:
                found[f"{section}.{field.name}"] = value
    return found


def build_config(
    file_data: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge the layers (flags > env > file > defaults) and validate, listing every problem.

    ``env`` and ``flags`` are dotted-key mappings (``{"server.port": 9000}``); string values are
    coerced (``"9000"`` → 9000) since environment variables are text.
    """
    problems: list[ConfigProblem] = []
    merged: dict[str, dict[str, Any]] = {}
    for key, value in (file_data or {}).items():
        if key not in _SECTIONS:
            problems.append(ConfigProblem(key, f"unknown section (expected one of: {', '.join(_SECTIONS)})"))
        elif not isinstance(value, dict):
            problems.append(ConfigProblem(key, "must be an object/table"))
        else:
            merged[key] = dict(value)
    for layer in (env or {}, flags or {}):
        for dotted, value in layer.items():
            if value is None:
                continue
            section, _, name = dotted.partition(".")
            merged.setdefault(section, {})[name] = value

    sections: dict[str, _Section] = {}
    for section, struct in _SECTIONS.items():
        values = merged.get(section, {})
        known = {f.name: f for f in msgspec.structs.fields(struct)}
        clean: dict[str, Any] = {}
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in known:
                problems.append(ConfigProblem(key, f"unknown key (expected one of: {', '.join(known)})"))
                continue
            try:
                clean[name] = msgspec.convert(value, known[name].type, strict=isinstance(value, (dict, list)))
            except msgspec.ValidationError as exc:
                problems.append(ConfigProblem(key, str(exc)))
        sections[section] = struct(**clean)
    if problems:
        raise ConfigError(problems)
    return Config(**sections)  # type: ignore[arg-type]


def _split(value: str, *, mapping: bool) -> list[str] | dict[str, str | None]:
    """``a,b`` → a list; for a mapping setting, ``a=x,b=y`` → a dict (an item without ``=`` maps
    to None, which validation reports). ``model.aliases`` takes either form."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not (mapping and any("=" in item for item in items)):
        return items
    pairs = (item.partition("=") for item in items)
    return {name.strip(): target.strip() or None for name, _, target in pairs}


def _is_list(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is list


def _is_mapping(tp: Any) -> bool:
    options = getattr(tp, "__args__", ()) if getattr(tp, "__origin__", None) is None else (tp,)
    return any(getattr(option, "__origin__", None) is dict for option in options)
