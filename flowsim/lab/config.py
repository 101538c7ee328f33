"""Experiment configurations: TOML files and built-in presets, validated with clear errors.

An experiment is one data set, one model and one or more potentials, each run by :func:`flowsim.simulate`
with the same loss, initialization, solver and horizon. A TOML file has these tables (all optional except
``[data]``, ``[model]`` and at least one ``[[potentials]]``)::

    [experiment]   name, description
    [data]         name = "digits" (a flowsim.data.load_dataset name) + its keyword arguments
    [model]        name = "two_layer_relu" + keyword arguments (input_dim is taken from the data)
    [[potentials]] name = "hyperbolic_entropy", beta = 0.1, label = "HE β=0.1" (label optional);
                   name = "blocks", blocks = [{size = 40, name = "he", beta = 0.1}, {size = 8, name = "euclidean"}]
                   (one potential per block of coordinates, flowsim.potentials.BlockPotential; not a sweep)
    [flow]         loss = "exponential" | "logistic", time = "log" | "linear",
                   allow_nonseparable = false (true: run on data the model cannot separate, see flowsim.guards)
    [init]         scale, seed

A **sweep** gives lists of values for ``[init] scale``/``seed`` or a potential parameter (e.g.
``beta = [0.01, 0.1, 1.0]``, ``seed = [0, 1, 2]``): every combination is one member, and ``flowsim run``
integrates the members through :func:`flowsim.ensemble.simulate_ensemble` (:func:`sweep_members`) with
``[solver] kinks``: one batched computation without Filippov handling, one member at a time under it.
A ``[sweep]`` table sweeps keyword arguments of ``[data]`` and ``[model]`` (whose own list values are
arguments, e.g. ``classes``) and the data set's name, ``[init] scale``/``seed`` and the mirror-descent settings
``[solver] step_size``/``schedule``/``variant``/``rollback``, keyed ``"table.key"``: ``[sweep] "model.width" =
[8, 16]``, ``"data.n" = [12, 24]``, ``"data.name" = ["iris", "wine"]``, ``"solver.step_size" = [0.1, 0.01]``;
every combination is a group of members with its own data set and model (:func:`sweep_groups`).
    [solver]       method, rtol, atol, max_steps; method = "md" runs discrete mirror descent
                   (flowsim.discrete) with step_size, schedule, variant, rollback
                   kinks = "auto" | "filippov" | "naive" (ReLU kinks, see flowsim.solvers.filippov)
                   options = {soft_cap = 2.0}: solver options for simulate(solver_options=...): the Filippov
                   driver's (flowsim.solvers.FILIPPOV_OPTIONS) and torchdiffeq's first_step, min_step, max_step,
                   safety, ifactor, dfactor; not with method = "md" or sweeps
    [horizon]      log_t_end, n_save, log_t_start, separation_log_t = 8.0 (log t by which a network run must
                   have separated the data, else status not_separable)
    [output]       plots = true, checkpoint_every = 50 (save points between each run's checkpoints; 0: none),
                   checkpoint_seconds = 300 (also checkpoint after this much wall time; 0: only by save points)

``allow_nonseparable``, ``separation_log_t`` and ``checkpoint_seconds`` are passed to :func:`flowsim.simulate`
(:func:`run_options`) only when given; ``separation_log_t`` also reaches the members of sweeps under Filippov
handling, ``allow_nonseparable`` every sweep. With ``method = "md"`` they set the flow runs of ``flowsim compare``
(``flowsim run`` refuses them: mirror descent takes none).

Unknown tables or keys raise :class:`~flowsim.errors.ConfigError` naming the valid ones. The built-in
presets (:data:`PRESETS`) are such files, ``flowsim/lab/presets/<name>.toml``.
"""

from __future__ import annotations

import copy
import itertools
import math
from importlib import resources
from pathlib import Path
from typing import Any

from ..discrete import SCHEDULES, VARIANTS
from ..errors import ConfigError, FlowSimError, UnknownPresetError
from ..flow import TIME_MODES
from ..losses import get_loss
from ..potentials import AbstractPotential, BlockPotential, get_potential
from ..solvers import ADAPTIVE_METHODS, AUTO_METHOD, FILIPPOV_OPTIONS, RK_OPTIONS, STIFF_METHODS
from ..solvers.select import KINKS_MODES

try:  # Python ≥ 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "load_config",
    "get_preset",
    "validate_config",
    "SCHEMA",
    "is_sweep",
    "sweep_members",
    "sweep_groups",
    "RUN_OPTIONS",
    "run_options",
]

# table -> allowed keys (None: free keyword arguments forwarded to a factory, checked there)
SCHEMA: dict[str, set[str] | None] = {
    "experiment": {"name", "description"},
    "data": None,
    "model": None,
    "potentials": None,
    "flow": {"loss", "time", "allow_nonseparable"},
    "init": {"scale", "seed"},
    "solver": {"method", "rtol", "atol", "max_steps", "kinks", "options"}
    | {"step_size", "schedule", "variant", "rollback"},
    "horizon": {"log_t_end", "n_save", "log_t_start", "separation_log_t"},
    "output": {"plots", "checkpoint_every", "checkpoint_seconds"},
    "sweep": None,  # "data.KEY" / "model.KEY" = [values] (see sweep_groups)
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "experiment": {"name": "experiment", "description": ""},
    "flow": {"loss": "exponential", "time": "log"},
    "init": {"scale": 1.0, "seed": 0},
    "solver": {"method": "dopri5", "rtol": 1e-6, "atol": 1e-9, "max_steps": 2_000_000, "kinks": "auto"},
    "horizon": {"log_t_end": 10.0, "n_save": 120, "log_t_start": None},
    "output": {"plots": True},
}

DEFAULT_PRESET = "main"

PRESET_DIR = "presets"  # flowsim/lab/presets/<name>.toml, one file per preset


def _load_presets() -> dict[str, dict[str, Any]]:
    """The built-in presets, read from the package's ``presets/*.toml`` (sorted by name)."""
    folder = resources.files(__package__) / PRESET_DIR
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    return {f.name[: -len(".toml")]: tomllib.loads(f.read_text(encoding="utf-8")) for f in files}


PRESETS: dict[str, dict[str, Any]] = _load_presets()


def _plain(obj: Any) -> Any:
    return copy.deepcopy(obj)


def validate_config(raw: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Check a raw configuration and fill in defaults.

    Args:
        raw: nested dict as read from TOML.
        source: where it came from (file name or preset), used in messages.

    Returns:
        a new dict with every table present and defaults filled in.

    Raises:
        ConfigError: unknown table or key (the message lists the valid ones), missing ``[data]``/``[model]``
            name or ``[[potentials]]``, a value of the wrong type, an unknown loss, time mode, method or kinks
            mode, a negative ``[init] scale``, or a potential that cannot be built (unknown name, missing or
            bad parameter). Data and model are checked by :func:`flowsim.lab.checks.check_runs`.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a configuration must be a table of tables, got {type(raw).__name__}")
    cfg: dict[str, Any] = {}
    for table, value in raw.items():
        if table not in SCHEMA:
            raise ConfigError(f"{source}: unknown table [{table}]; valid tables are {sorted(SCHEMA)}")
        allowed = SCHEMA[table]
        if table == "potentials":
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                raise ConfigError(
                    f"{source}: [[potentials]] must be a non-empty list of tables, e.g. "
                    '[[potentials]]\\nname = "euclidean"'
                )
            for i, pot in enumerate(value):
                if "name" not in pot:
                    raise ConfigError(f"{source}: potentials[{i}] has no 'name' (e.g. name = \"euclidean\")")
            cfg[table] = _plain(value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{table}] must be a table, got {type(value).__name__}")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ConfigError(f"{source}: unknown key(s) {unknown} in [{table}]; valid keys are {sorted(allowed)}")
        cfg[table] = _plain(value)
    for table in ("data", "model"):
        if table not in cfg or "name" not in cfg[table]:
            raise ConfigError(f"{source}: [{table}] with a 'name' is required (see `flowsim info` for names)")
    if "potentials" not in cfg:
        raise ConfigError(f"{source}: at least one [[potentials]] table is required")
    for table, defaults in DEFAULTS.items():
        merged = dict(defaults)
        merged.update(cfg.get(table, {}))
        cfg[table] = merged
    numeric = {
        ("solver", "rtol"),
        ("solver", "atol"),
        ("horizon", "log_t_end"),
        ("init", "scale"),
    }
    sweepable = {("init", "scale"), ("init", "seed")}  # a list of values is a sweep (see sweep_members)
    for table, key in numeric:
        v = cfg[table][key]
        for item in _sweep_values(v, source, f"[{table}] {key}") if (table, key) in sweepable else [v]:
            if not isinstance(item, int | float) or isinstance(item, bool):
                raise ConfigError(f"{source}: [{table}] {key} must be a number, got {item!r}")
    for table, key in (("horizon", "n_save"), ("init", "seed"), ("solver", "max_steps")):
        v = cfg[table][key]
        for item in _sweep_values(v, source, f"[{table}] {key}") if (table, key) in sweepable else [v]:
            if not isinstance(item, int) or isinstance(item, bool):
                raise ConfigError(f"{source}: [{table}] {key} must be an integer, got {item!r}")
    _check_solver_ranges(cfg, source)
    _check_run_choices(cfg, source)
    for i, pot in enumerate(cfg["potentials"]):
        check_block_table(pot, source, f"potentials[{i}]", per_tensor=False)
        for key, value in pot.items():
            if key not in ("name", "label", *BLOCK_KEYS):
                _sweep_values(value, source, f"potentials[{i}] {key}")
    _check_potentials(cfg, source)
    _check_sweep_table(cfg, source)
    every = cfg["output"].get("checkpoint_every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        raise ConfigError(
            f"{source}: [output] checkpoint_every must be an integer ≥ 0 (save points between checkpoints; 0: "
            f"none), got {every!r}"
        )
    _check_swept_md_solver(cfg, source)
    _check_solver_options(cfg, source)
    _check_run_options(cfg, source)
    return cfg


def _check_solver_ranges(cfg: dict[str, Any], source: str) -> None:
    """[solver] rtol and atol finite and > 0, max_steps ≥ 1, [horizon] n_save ≥ 2: refused when the file is read,
    before an experiment folder is written or a run starts (``simulate`` would refuse them at its first run)."""
    solver = cfg["solver"]
    for key, example in (("rtol", "1e-6"), ("atol", "1e-9")):
        if not (math.isfinite(solver[key]) and solver[key] > 0):
            raise ConfigError(
                f"{source}: [solver] {key} must be a positive finite number (e.g. {example}), got {solver[key]!r}"
            )
    if solver["max_steps"] < 1:
        raise ConfigError(
            f"{source}: [solver] max_steps must be an integer ≥ 1 (the step budget), got {solver['max_steps']!r}"
        )
    if cfg["horizon"]["n_save"] < 2:
        raise ConfigError(
            f"{source}: [horizon] n_save must be an integer ≥ 2 (t = 0 and the horizon), "
            f"got {cfg['horizon']['n_save']!r}"
        )


METHODS = (*ADAPTIVE_METHODS, *STIFF_METHODS, AUTO_METHOD, "md")
"""``[solver] method`` values: the flow's solvers (:func:`flowsim.simulate`) and ``"md"`` (discrete mirror descent)."""


def _check_run_choices(cfg: dict[str, Any], source: str) -> None:
    """[flow] loss and time, [solver] method and kinks, [init] scale ≥ 0: refused when the file is read, before an
    experiment folder is written (the runs would refuse them as they start)."""
    try:
        get_loss(cfg["flow"]["loss"])
    except FlowSimError as e:
        raise ConfigError(f"{source}: [flow] loss: {e}") from e
    if cfg["solver"]["method"] not in METHODS:
        raise ConfigError(
            f"{source}: [solver] method must be one of {list(METHODS)}, got {cfg['solver']['method']!r}: an explicit "
            f"adaptive method (dopri5, the default), an implicit one for long log-time horizons (radau, bdf, lsoda), "
            f'"{AUTO_METHOD}" (dopri5, then radau) or "md" (discrete mirror descent, with step_size)'
        )
    for table, key, valid in (("flow", "time", TIME_MODES), ("solver", "kinks", KINKS_MODES)):
        if cfg[table][key] not in valid:
            raise ConfigError(f"{source}: [{table}] {key} must be one of {list(valid)}, got {cfg[table][key]!r}")
    for scale in _sweep_values(cfg["init"]["scale"], source, "[init] scale"):
        if not (math.isfinite(scale) and scale >= 0):
            raise ConfigError(
                f"{source}: [init] scale must be a finite number ≥ 0 (the size of the initial parameters; a sign "
                f"flip is no rescaling of a homogeneous model), got {scale!r}"
            )


def _check_potentials(cfg: dict[str, Any], source: str) -> None:
    """Every potential a configuration's runs use (each value of a swept parameter) can be built: its name and
    parameters (a missing ``beta``, a typo in the name) are refused when the file is read."""
    probe = {"init": {"scale": 1.0, "seed": 0}}  # (the potentials' members only)
    for i, pot in enumerate(cfg["potentials"]):
        for member in sweep_members({**probe, "potentials": [pot]}):
            _table_potential(member["potential"], f"{source}: potentials[{i}]")


RUN_OPTIONS = {"allow_nonseparable": "flow", "separation_log_t": "horizon", "checkpoint_seconds": "output"}
"""Keyword arguments of :func:`flowsim.simulate` set from a configuration's tables (key -> table), only when given."""


def flow_arguments(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``simulate`` keyword arguments every flow run of a validated configuration shares: loss, time, the
    horizon and save grid, the solver's method, tolerances and step budget."""
    horizon, solver = cfg["horizon"], cfg["solver"]
    return {
        "loss": cfg["flow"]["loss"],
        "time": cfg["flow"]["time"],
        "log_t_end": horizon["log_t_end"],
        "n_save": horizon["n_save"],
        "log_t_start": horizon["log_t_start"],
        "method": solver["method"],
        "rtol": solver["rtol"],
        "atol": solver["atol"],
        "max_steps": solver["max_steps"],
    }


def run_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_OPTIONS` a validated configuration gives, as ``simulate`` keyword arguments (absent keys
    are left out, so ``simulate``'s defaults apply)."""
    return {key: cfg[table][key] for key, table in RUN_OPTIONS.items() if key in cfg.get(table, {})}


def _check_run_options(cfg: dict[str, Any], source: str) -> None:
    """[flow] allow_nonseparable (true/false), [horizon] separation_log_t (a finite log t), [output]
    checkpoint_seconds (a number ≥ 0)."""
    given = run_options(cfg)
    if "allow_nonseparable" in given and not isinstance(given["allow_nonseparable"], bool):
        raise ConfigError(
            f"{source}: [flow] allow_nonseparable must be true or false (true: run on data a model linear in x "
            f"cannot separate, and no separation check for networks), got {given['allow_nonseparable']!r}"
        )
    v = given.get("separation_log_t", 0.0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(
            f"{source}: [horizon] separation_log_t must be a finite number (the log t by which a network run must "
            f"have separated the data, e.g. 8.0; to switch the check off set [flow] allow_nonseparable = true), "
            f"got {v!r}"
        )
    v = given.get("checkpoint_seconds", 0.0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
        raise ConfigError(
            f"{source}: [output] checkpoint_seconds must be a number of seconds ≥ 0 (wall time between "
            f"checkpoints, e.g. 300; 0: checkpoints only every checkpoint_every save points), got {v!r}"
        )


SWEEP_TABLES = ("data", "model", "init", "solver")  # tables whose keys a [sweep] table may sweep
SWEEP_FIXED_KEYS = {  # the keys a [sweep] table may sweep in the tables with a fixed set of keys
    "init": {"scale", "seed"},
    "solver": {"step_size", "schedule", "variant", "rollback"},  # mirror-descent settings (method = "md")
}


def _check_sweep_table(cfg: dict[str, Any], source: str) -> None:
    """[sweep]: keys "data.KEY" (the data set's name too), "model.KEY" (KEY not "name"), "init.scale"/"init.seed"
    or a mirror-descent setting "solver.step_size"/"schedule"/"variant"/"rollback", each a non-empty list."""
    for key, values in cfg.get("sweep", {}).items():
        table, _, name = key.partition(".")
        fixed = SWEEP_FIXED_KEYS.get(table)
        if (
            table not in SWEEP_TABLES
            or not name
            or (table == "model" and name == "name")
            or (fixed is not None and name not in fixed)
        ):
            raise ConfigError(
                f"{source}: [sweep] key {key!r} must name a keyword argument of [data] (or its name) or [model] as "
                '"table.key", e.g. "model.width" = [8, 16], "data.n" = [12, 24], "data.name" = ["iris", "wine"], '
                'or one of "init.scale", "init.seed", "solver.step_size", "solver.schedule", "solver.variant", '
                '"solver.rollback"'
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: [sweep] {key!r} must be a non-empty list of values, got {values!r}")
        if table == "init" and isinstance(cfg["init"].get(name), list):
            raise ConfigError(f"{source}: [init] {name} is a list and [sweep] {key!r} sweeps it too; give one of them")
        for value in values if table == "init" else ():
            if isinstance(value, bool) or not isinstance(value, int if name == "seed" else int | float):
                kind = "integers" if name == "seed" else "numbers"
                raise ConfigError(f"{source}: [sweep] {key!r} values must be {kind}, got {value!r}")


def _check_swept_md_solver(cfg: dict[str, Any], source: str) -> None:
    """:func:`_check_md_solver` of every ``[sweep]`` group's ``[solver]`` (swept mirror-descent settings); the
    defaults it fills in for unswept keys go into ``cfg["solver"]``."""
    swept = {k.partition(".")[2]: v for k, v in cfg.get("sweep", {}).items() if k.startswith("solver.")}
    if not swept:
        _check_md_solver(cfg["solver"], source)
        return
    for combo in itertools.product(*swept.values()):
        probe = {**cfg["solver"], **dict(zip(swept, combo, strict=True))}
        _check_md_solver(probe, source)
    for key, value in probe.items():
        if key not in swept:
            cfg["solver"].setdefault(key, value)


def _check_solver_options(cfg: dict[str, Any], source: str) -> None:
    """[solver] options: a table of scalar values, for flow runs of one configuration (not md, not sweeps)."""
    rk_options = RK_OPTIONS - {"norm", "dtype"}  # (not expressible in TOML)

    opts = cfg["solver"].get("options")
    if opts is None:
        return
    if not isinstance(opts, dict):
        raise ConfigError(f"{source}: [solver] options must be a table like {{soft_cap = 2.0}}, got {opts!r}")
    if cfg["solver"].get("method") == "md":
        raise ConfigError(f'{source}: [solver] options apply to the flow\'s solvers, not to method = "md"')
    if is_sweep(cfg):
        raise ConfigError(f"{source}: [solver] options are not supported for sweeps (lists of values)")
    flags = {"soft_crossings", "exact_saves"}
    numbers = {"soft_fraction", "soft_cap", "truncated_growth"} | rk_options
    valid = sorted(FILIPPOV_OPTIONS | rk_options)
    for key, value in opts.items():
        if key not in valid:
            raise ConfigError(f"{source}: [solver] options: unknown option {key!r}; valid options are {valid}")
        if key in flags and not isinstance(value, bool):
            raise ConfigError(f"{source}: [solver] options: {key} must be true or false, got {value!r}")
        if key in numbers:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0 or (value == 0 and key != "soft_fraction"):
                raise ConfigError(f"{source}: [solver] options: {key} must be a positive number, got {value!r}")
        if key == "event_state" and value not in ("redo", "interpolate"):
            raise ConfigError(f'{source}: [solver] options: event_state must be "redo" or "interpolate", got {value!r}')
    driver_only = sorted(FILIPPOV_OPTIONS & set(opts))
    if driver_only and cfg["solver"].get("kinks") == "naive":
        raise ConfigError(f'{source}: [solver] options {driver_only} are for kinks = "filippov" or "auto", not "naive"')


BLOCK_KEYS = ("blocks", "default")
"""Keys of block-potential tables (``name = "blocks"`` / ``"per_tensor"``): one structured value, never a sweep."""
_BLOCKS_EXAMPLE = 'blocks = [{size = 40, name = "hyperbolic_entropy", beta = 0.1}, {size = 8, name = "euclidean"}]'
_PER_TENSOR_EXAMPLE = 'blocks = {conv1 = {name = "hyperbolic_entropy", beta = 0.05}}, default = {name = "euclidean"}'


def check_block_table(pot: dict[str, Any], source: str, where: str, *, per_tensor: bool) -> None:
    """The shape of a ``name = "blocks"`` / ``"per_tensor"`` potential table (each block a table with a name)."""
    name = str(pot.get("name", "")).strip().lower().replace("-", "_")
    if name not in ("blocks", "per_tensor"):
        return
    if name == "per_tensor" and not per_tensor:
        raise ConfigError(
            f"{source}: {where}: name = 'per_tensor' (potentials by tensor name) is for vision configurations; "
            f"here give the blocks by size: name = 'blocks', {_BLOCKS_EXAMPLE}"
        )
    extra = sorted(set(pot) - {"name", "label", "step_size", "blocks", *(("default",) if name == "per_tensor" else ())})
    blocks = pot.get("blocks")
    want = dict if name == "per_tensor" else list
    if extra or not isinstance(blocks, want) or not blocks:
        example = _PER_TENSOR_EXAMPLE if name == "per_tensor" else _BLOCKS_EXAMPLE
        raise ConfigError(
            f"{source}: {where}: name = {name!r} takes blocks = a non-empty "
            f"{'table of tensor name -> potential table' if want is dict else 'list of tables with size and name'}"
            f"{f' (unknown keys {extra})' if extra else ''}, e.g. {example}"
        )
    items = list(blocks.items()) if isinstance(blocks, dict) else list(enumerate(blocks))
    if name == "per_tensor" and "default" in pot:
        items.append(("default", pot["default"]))
    for key, block in items:
        if not isinstance(block, dict) or "name" not in block:
            raise ConfigError(
                f"{source}: {where}: block {key!r} must be a table with a potential name, e.g. "
                f'{{name = "hyperbolic_entropy", beta = 0.1}}, got {block!r}'
            )


def potential_from_table(
    table: dict[str, Any], *, model: Any = None, where: str = "[[potentials]]"
) -> AbstractPotential:
    """The potential of one potential table (keys ``label`` and ``step_size`` ignored).

    ``name = "per_tensor"`` builds :meth:`flowsim.potentials.BlockPotential.per_tensor` on `model` from
    ``blocks = {tensor = {name = ..., **params}}`` and an optional ``default = {name = ...}``; ``name = "blocks"``
    a :class:`~flowsim.potentials.BlockPotential` from sizes; any other name :func:`~flowsim.potentials.get_potential`.

    Raises:
        ConfigError: a bad table, name or parameter; an unknown tensor name; block sizes that do not add up to
            the model's parameter count (the message names the block and the fix).
    """
    params = {k: v for k, v in table.items() if k not in ("name", "label", "step_size")}
    name = str(table.get("name", "")).strip().lower().replace("-", "_")
    check_block_table(table, "config", where, per_tensor=model is not None)
    try:
        if name == "per_tensor":
            pots = {}
            for tensor, block in params["blocks"].items():
                pots[tensor] = _table_potential(block, f"{where} block {tensor!r}")
            default = params.get("default")
            default = None if default is None else _table_potential(default, f"{where} default")
            pot = BlockPotential.per_tensor(model, pots, default=default)
        else:
            pot = get_potential(table.get("name"), **params)
    except ConfigError:
        raise
    except FlowSimError as e:
        raise ConfigError(f"{where}: {e}") from e
    size = getattr(pot, "size", None)
    if model is not None and size is not None and size != model.num_params:
        raise ConfigError(
            f"{where}: the blocks' sizes add up to {size}, but the model has {model.num_params} parameters "
            f"({model.param_shapes()}); make the sizes add up to {model.num_params}, or use name = 'per_tensor'"
        )
    return pot


def _table_potential(block: dict[str, Any], where: str) -> AbstractPotential:
    spec = dict(block)
    try:
        return get_potential(spec.pop("name"), **spec)
    except FlowSimError as e:
        raise ConfigError(f"{where}: {e}") from e


def _sweep_values(value: Any, source: str, where: str) -> list[Any]:
    """The values of a sweepable key: a non-empty list as given, a scalar as a one-element list."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{source}: {where} is an empty list; give at least one value, e.g. [0, 1, 2]")
        return list(value)
    return [value]


def is_sweep(cfg: dict[str, Any]) -> bool:
    """True when a validated configuration gives a list of values for [init] scale/seed or a potential parameter,
    or a [sweep] table."""
    if cfg.get("sweep") or isinstance(cfg["init"]["scale"], list) or isinstance(cfg["init"]["seed"], list):
        return True
    return any(
        isinstance(v, list)
        for pot in cfg["potentials"]
        for k, v in pot.items()
        if k not in ("name", "label", *BLOCK_KEYS)
    )


def sweep_groups(cfg: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Expand a validated configuration's ``[sweep]`` table into groups: one configuration per combination.

    Each group's configuration is ``cfg`` with the swept ``[data]``/``[model]`` keyword arguments set to one
    combination (the ``[sweep]`` keys in the order given, last fastest) and no ``[sweep]`` table; its members
    are :func:`sweep_members` of it. Without a ``[sweep]`` table: ``[(cfg, "")]``.

    Returns:
        ``[(group configuration, label prefix)]``; the prefix names the combination, e.g. ``"width=8 n=12"``
        (``"model.width=8"`` where two tables sweep the same key name).

    Example:
        >>> cfg = {"data": {"name": "gaussian"}, "model": {"name": "two_layer_relu", "width": 4},
        ...        "sweep": {"model.width": [4, 8]}}
        >>> [(g["model"]["width"], prefix) for g, prefix in sweep_groups(cfg)]
        [(4, 'width=4'), (8, 'width=8')]
    """
    sweep = cfg.get("sweep") or {}
    if not sweep:
        return [(cfg, "")]
    keys = list(sweep)
    short = [k.partition(".")[2] for k in keys]
    names = [s if short.count(s) == 1 else k for k, s in zip(keys, short, strict=True)]
    groups = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        group = {t: _plain(v) for t, v in cfg.items() if t != "sweep"}
        for key, value in zip(keys, combo, strict=True):
            table, _, name = key.partition(".")
            group[table][name] = _plain(value)
        groups.append((group, " ".join(f"{n}={v}" for n, v in zip(names, combo, strict=True))))
    return groups


def sweep_members(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Expand a validated configuration into ensemble members: one per combination of swept values.

    For each ``[[potentials]]`` table, the Cartesian product of its list-valued parameters × ``[init] scale``
    × ``[init] seed`` (scalars count as one value), in that order (last fastest).

    Returns:
        A list of dicts ``{"potential": {"name": ..., **params}, "init_scale", "seed", "label"}``; labels are
        the potential's label (or ``name(params)``) followed by the swept values, e.g.
        ``"hyperbolic_entropy(beta=0.1) seed=2"``.

    Example:
        >>> cfg = {"init": {"scale": 1.0, "seed": [0, 1]},
        ...        "potentials": [{"name": "hyperbolic_entropy", "beta": [0.1, 1.0]}]}
        >>> [m["label"] for m in sweep_members(cfg)]  # doctest: +NORMALIZE_WHITESPACE
        ['hyperbolic_entropy(beta=0.1) seed=0', 'hyperbolic_entropy(beta=0.1) seed=1',
         'hyperbolic_entropy(beta=1.0) seed=0', 'hyperbolic_entropy(beta=1.0) seed=1']
    """
    scales = _sweep_values(cfg["init"]["scale"], "config", "[init] scale")
    seeds = _sweep_values(cfg["init"]["seed"], "config", "[init] seed")
    members = []
    for pot in cfg["potentials"]:
        keys = [k for k in pot if k not in ("name", "label")]
        swept = [k for k in keys if isinstance(pot[k], list) and k not in BLOCK_KEYS]
        values = ([pot[k]] if k in BLOCK_KEYS else _sweep_values(pot[k], "config", k) for k in keys)
        for combo in itertools.product(*values):
            params = dict(zip(keys, combo, strict=True))
            if "label" in pot:
                base = str(pot["label"])
                extra = [f"{k}={params[k]}" for k in swept]
            else:
                inner = ", ".join(f"{k}={v}" for k, v in params.items())
                base = f"{pot['name']}({inner})" if inner else str(pot["name"])
                extra = []
            for scale, seed in itertools.product(scales, seeds):
                parts = list(extra)
                if len(scales) > 1:
                    parts.append(f"scale={scale}")
                if len(seeds) > 1:
                    parts.append(f"seed={seed}")
                members.append(
                    {
                        "potential": {"name": pot["name"], **params},
                        "init_scale": float(scale),
                        "seed": int(seed),
                        "label": " ".join([base, *parts]),
                    }
                )
    return members


def _check_md_solver(solver: dict[str, Any], source: str) -> None:
    """[solver] method = "md": step_size (a positive number) is required, schedule/variant must be known."""
    md_keys = sorted({"step_size", "schedule", "variant", "rollback"} & set(solver))
    if solver.get("method") != "md":
        if md_keys:
            raise ConfigError(f'{source}: [solver] {md_keys} apply to method = "md" (discrete mirror descent) only')
        return
    eta = solver.get("step_size")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 0:
        raise ConfigError(
            f'{source}: [solver] method = "md" needs step_size = a positive number (e.g. 0.1), got {eta!r}'
        )
    solver.setdefault("schedule", "constant")
    solver.setdefault("variant", "mirror")
    solver.setdefault("rollback", False)
    if solver["schedule"] not in SCHEDULES:
        raise ConfigError(f"{source}: [solver] schedule must be one of {SCHEDULES}, got {solver['schedule']!r}")
    if solver["variant"] not in VARIANTS:
        raise ConfigError(f"{source}: [solver] variant must be one of {VARIANTS}, got {solver['variant']!r}")


def get_preset(name: str) -> dict[str, Any]:
    """A validated copy of the built-in preset ``name``.

    Raises:
        UnknownPresetError: for an unknown name (the message lists the presets).
    """
    if name not in PRESETS:
        raise UnknownPresetError(
            f"unknown preset {name!r}; available presets are {sorted(PRESETS)} (or pass --config FILE.toml)"
        )
    return validate_config(PRESETS[name], source=f"preset {name!r}")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a TOML experiment file.

    Raises:
        ConfigError: file missing, not valid TOML, or invalid content (see :func:`validate_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a .toml experiment file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    return validate_config(raw, source=str(path))
