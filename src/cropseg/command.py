"""One way to give options to every cropseg command: ``key=value``, composed by Hydra.

Every command reads its options from a YAML file in ``conf/`` (``conf/mosaic.yaml``,
``conf/prepare/convert.yaml``...) composed with the user's ``key=value`` overrides through
``cropseg.config.compose``, the same grammar and the same config files as
``python -m cropseg.train``. A command declares which keys bare words fill
(``cropseg info model.ckpt`` is ``cropseg info ckpt=model.ckpt``); ``--help`` lists every
key with its default and the comment beside it in the YAML file.

Values that Hydra's grammar would misread (``{year}`` templates, ``;``, ``$(...)``,
``~``, commas in a path) are quoted for the user, and ``a,b`` given to a list key is the
list ``[a,b]``. An unknown key, an unknown group option or a malformed value ends with one
line naming the key (``UserError``). Errors, Ctrl-C and closed pipes are handled by
``cropseg.errors.report_user_errors``, which wraps every command's ``main``.

Adding a command: write ``conf/NAME.yaml`` (commented keys), a ``run(cfg: dict) -> int``
and ``main = Command(...).main`` (or a ``Group`` of subcommands).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cropseg.errors import UserError, report_user_errors

# --------------------------------------------------------------------------- Hydra groups


def group_options(*groups: str) -> dict[str, list[str]]:
    """The options of each config group (``model`` → unet, fpn...; ``hydra/launcher`` → basic, ...),
    as Hydra sees them: ``conf/<group>/*.yaml`` and the groups of Hydra and its plugins.
    A name that is not a group has no options."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cropseg.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {g: sorted(loader.get_group_options(g)) for g in groups}


def _defaults_groups(config: str) -> set[str]:
    """Groups named in the defaults list of primary config ``config`` (``model``, ``loss``, ...)."""
    import yaml

    from cropseg.config import CONFIG_DIR

    path = CONFIG_DIR / f"{config}.yaml"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    groups = set()
    for entry in doc.get("defaults") or []:
        if isinstance(entry, dict):
            for key in entry:
                groups.add(str(key).split()[-1])  # "optional experiment", "override hydra/launcher"
    return groups


_SWEEP_FUNC = re.compile(r"^\s*choice\((.*)\)\s*$")


def check_group_overrides(config: str, overrides: Sequence[str]) -> None:
    """Refuse ``group=option`` overrides naming no option of the group, in one line listing the valid ones.

    Hydra itself answers ``model=segnet`` with a many-line message and exit 1; every command
    (``python -m cropseg.train``, ``predict``, the compose-based ones) calls this first. Sweep
    values (``model=unet,fpn``, ``choice(unet,fpn)``) are checked option by option.
    """
    defaults = _defaults_groups(config)
    wanted: list[tuple[str, str]] = []
    for override in overrides:
        if "=" not in override or override.startswith("-"):
            continue
        key, _, value = override.partition("=")
        plus = key.startswith("+")
        key = key.lstrip("+~")
        if "." in key or not (key in defaults or plus or key.startswith("hydra/")):
            continue
        m = _SWEEP_FUNC.match(value)
        inner = m.group(1) if m else value
        if "(" in inner or "$" in inner:
            continue  # glob(), range() or an interpolation: leave it to Hydra
        wanted.append((key, inner))
    if not wanted:
        return
    options = group_options(*{k for k, _ in wanted})
    for key, inner in wanted:
        valid = options[key]
        if not valid:
            continue  # not a group (``+new_key=1``): Hydra decides
        for choice in (c.strip().strip("'\"") for c in inner.split(",")):
            if choice in ("null", "") or choice in valid:
                continue
            raise UserError(f"{key}={choice!r} is not a known option of {key}; choose one of: {', '.join(valid)}")


# --------------------------------------------------------------------------- values


def quote(value: str) -> str:
    """``value`` as a quoted Hydra string: backslashes before a quote (or at the end) doubled, quotes escaped."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def _parses_plainly(override: str) -> bool:
    """True when Hydra reads ``key=value`` as a plain (non-sweep) value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return not OverridesParser.create().parse_override(override).is_sweep_override()
    except HydraException:
        return False


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def to_override(key: str, value: str, default: Any) -> str:
    """One ``key=value`` as Hydra should read it: quoted where its grammar would misread the value,
    ``a,b`` as ``[a,b]`` for a list key."""
    from omegaconf import ListConfig

    bare = key.lstrip("+~")
    if isinstance(default, (list, ListConfig)) and not value.strip().startswith("["):
        items = _split_list(value)
        return f"{key}=[" + ",".join(v if _parses_plainly(f"x={v}") else quote(v) for v in items) + "]"
    if _parses_plainly(f"{bare}={value}"):
        return f"{key}={value}"
    return f"{key}={quote(value)}"


# --------------------------------------------------------------------------- help


def _comments(path: Path) -> dict[str, str]:
    """Comment beside each key of a YAML file (or on the lines just above it), by dotted key.

    The file's opening comment block (its usage lines) belongs to no key.
    """
    helps: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    header = True
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            above, header = [], False
            continue
        if stripped.startswith("#"):
            if not header and not stripped.startswith("# @"):
                above.append(stripped.lstrip("#").strip())
            continue
        header = False
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*)\s*:(.*)$", line)
        if not m or stripped.startswith("-"):
            above = []
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        inline = rest.partition(" #")[2].strip() if " #" in rest else ""
        helps[dotted] = inline or " ".join(above)
        above = []
    return helps


_TYPES = {bool: "true or false", int: "an integer", float: "a number"}


def _check_types(base: Any, cfg: Any, keys: Sequence[str], prog: str) -> None:
    """A value given for a key whose default is a boolean or a number must be one too (YAML configs
    carry no schema, so Hydra would pass ``workers=many`` on as text)."""
    from omegaconf import OmegaConf

    for key in keys:
        if key.startswith(("+", "~")):
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        kind = type(default)
        if value is None or kind not in _TYPES:
            continue
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, int) and not isinstance(value, bool) if kind is int else
            isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise UserError(f"{prog}: {key}={value!r} is not {_TYPES[kind]}")


def _has_key(cfg: Any, dotted: str) -> bool:
    """Whether ``dotted`` names a key of ``cfg`` (mandatory ``???`` keys included; list items by index)."""
    from omegaconf import DictConfig, ListConfig

    node = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig):
            if part not in node.keys():
                return False
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit():
            if int(part) >= len(node):
                return False
            node = node._get_node(int(part))
        else:
            return False
    return True


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        out = []
        for k, v in node.items():
            out += _flatten(v, f"{prefix}{k}.")
        return out
    return [(prefix[:-1], node)]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


# --------------------------------------------------------------------------- commands

_BASES: dict[str, Any] = {}


@dataclass(frozen=True)
class Command:
    """A command whose options are the keys of ``conf/<config>.yaml``.

    ``positional`` names the keys that bare words fill, in order; a name ending in ``...``
    collects every remaining bare word into that (list) key. ``passthrough`` names a key
    whose dotted overrides (``data.root=...``) are not composed but handed over as a list of
    ``KEY=VALUE`` strings, for commands that change another config (a checkpoint's).
    """

    prog: str
    config: str
    run: Callable[[dict[str, Any]], int | None]
    summary: str
    positional: tuple[str, ...] = ()
    passthrough: str | None = None

    # -- parsing -------------------------------------------------------------------------
    def _base(self):
        """The defaults (composed once per config; read, never changed)."""
        from cropseg.config import compose

        if self.config not in _BASES:
            try:
                _BASES[self.config] = compose(self.config, [])
            except Exception as err:  # noqa: BLE001 - a broken packaged config is a bug, but say which
                raise RuntimeError(f"{self.prog}: cannot compose conf/{self.config}.yaml: {err}") from err
        return _BASES[self.config]

    def overrides(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as Hydra overrides (bare words put under the positional keys)."""
        from omegaconf import OmegaConf

        base = self._base()

        def default(key: str) -> Any:
            if not key.startswith(("+", "~", "hydra.")) and not _has_key(base, key):
                parent = key.rpartition(".")[0]
                node = OmegaConf.select(base, parent, throw_on_missing=False) if parent else base
                keys = [f"{parent}.{k}" if parent else str(k) for k in node.keys()] \
                    if hasattr(node, "keys") and (not parent or _has_key(base, parent)) else list(map(str, base.keys()))
                if parent and not keys:
                    raise UserError(f"{self.prog}: {parent} has no keys yet: add one with +{key}=...")
                raise UserError(f"{self.prog}: {key!r} is not a key of conf/{self.config}.yaml; "
                                f"keys: {', '.join(keys)} ({self.prog} --help)")
            return OmegaConf.select(base, key.lstrip("+~"), default=None, throw_on_missing=False)

        out: list[str] = []
        bare: list[str] = []
        for arg in argv:
            if arg.startswith("-"):
                hint = arg.lstrip("-").split("=", 1)[0].replace("-", "_")
                raise UserError(f"{self.prog}: {arg!r} is not an option; options are key=value "
                                f"(e.g. {hint}=...; {self.prog} --help lists the keys)")
            if "=" not in arg:
                bare.append(arg)
                continue
            key, _, value = arg.partition("=")
            out.append(to_override(key, value, default(key)))
        if bare:
            names = list(self.positional)
            if not names:
                raise UserError(f"{self.prog}: {bare[0]!r} is not key=value ({self.prog} --help lists the keys)")
            for i, name in enumerate(names):
                if name.endswith("..."):
                    words, bare = bare, []
                    out.append(f"{name[:-3]}=[" + ",".join(quote(w) for w in words) + "]")
                    break
                if not bare:
                    break
                out.append(f"{name}={quote(bare.pop(0))}")
            if bare:
                raise UserError(f"{self.prog}: too many bare arguments ({' '.join(bare)}); "
                                f"give them as key=value ({self.prog} --help)")
        return out

    def load(self, argv: Sequence[str]) -> dict[str, Any]:
        """The composed config as plain data; a bad key or value is a UserError naming it."""
        from hydra.errors import HydraException, MissingConfigException
        from omegaconf.errors import OmegaConfBaseException

        from cropseg.config import compose, to_container

        passed: list[str] = []
        if self.passthrough:
            prefix = f"{self.passthrough}."
            passed = [a[len(prefix):] for a in argv if a.startswith(prefix) and "=" in a]
            argv = [a for a in argv if not (a.startswith(prefix) and "=" in a)]
        overrides = self.overrides(argv)
        check_group_overrides(self.config, overrides)
        try:
            cfg = compose(self.config, overrides)
        except MissingConfigException as err:
            raise UserError(f"{self.prog}: {' '.join(str(err).split())[:300]}") from None
        except (HydraException, OmegaConfBaseException) as err:
            raise UserError(f"{self.prog}: {_hydra_message(err)}") from None
        _check_types(self._base(), cfg, [o.partition("=")[0] for o in overrides], self.prog)
        plain = to_container(cfg)
        if self.passthrough:
            plain[self.passthrough] = passed
        return plain

    # -- help ----------------------------------------------------------------------------
    def usage(self) -> str:
        from omegaconf import OmegaConf

        from cropseg.config import CONFIG_DIR

        words = " ".join(f"[{p[:-3].upper()}...]" if p.endswith("...") else f"[{p.upper()}]" for p in self.positional)
        lines = [f"usage: {self.prog} {words + ' ' if words else ''}[key=value ...]", "", self.summary, ""]
        if self.positional:
            lines.append("bare words fill: " + ", ".join(p.replace("...", " (all the rest)") for p in self.positional))
            lines.append("")
        path = CONFIG_DIR / f"{self.config}.yaml"
        lines.append(f"keys (defaults from conf/{self.config}.yaml; lists as a,b or [a,b]):")
        plain = OmegaConf.to_container(self._base(), resolve=False)
        helps = _comments(path) if path.is_file() else {}
        items = [(k, _show(v)) for k, v in _flatten(plain)]
        width = min(34, max((len(k) + len(v) + 1 for k, v in items), default=10))
        for key, value in items:
            text = f"{key}={value}"
            note = helps.get(key, "")
            lines.append(f"  {text:<{width}}  {note}".rstrip() if note else f"  {text}")
        return "\n".join(lines)

    def __call__(self, argv: Sequence[str]) -> int:
        argv = list(argv)
        if any(a in ("-h", "--help") for a in argv):
            print(self.usage())
            return 0
        return int(self.run(self.load(argv)) or 0)

    @property
    def main(self) -> Callable[[list[str] | None], int]:
        return _entry_point(self)


@dataclass(frozen=True)
class Group:
    """A command of subcommands: ``cropseg prepare convert key=value ...``.

    With ``default``, arguments that do not start with a subcommand's name go to that one
    (``cropseg publish MAPS...`` and ``cropseg publish status``).
    """

    prog: str
    commands: dict[str, Command]
    summary: str = ""
    default: str | None = None

    def usage(self) -> str:
        width = max(map(len, self.commands))
        sub = f"[SUBCOMMAND] (default: {self.default})" if self.default else "SUBCOMMAND"
        lines = [f"usage: {self.prog} {sub} [key=value ...]", ""]
        if self.summary:
            lines += [self.summary, ""]
        lines += ["subcommands:"] + [f"  {n:<{width}}  {c.summary}" for n, c in self.commands.items()]
        lines += ["", f"{self.prog} SUBCOMMAND --help lists its keys."]
        return "\n".join(lines)

    def __call__(self, argv: Sequence[str]) -> int:
        argv = list(argv)
        if self.default and argv and argv[0] in {"-h", "--help", "help"}:
            others = [f"  {self.prog} {n}  {c.summary}" for n, c in self.commands.items() if n != self.default]
            print(self.commands[self.default].usage() + "\n\nalso:\n" + "\n".join(others))
            return 0
        if (not argv and not self.default) or (argv and argv[0] in {"-h", "--help", "help"}):
            print(self.usage())
            return 0
        if self.default and (not argv or argv[0] not in self.commands):
            argv = [self.default, *argv]
        name, rest = argv[0], argv[1:]
        if name not in self.commands:
            raise UserError(f"{self.prog}: unknown subcommand {name!r}; choose one of: {', '.join(self.commands)}")
        return self.commands[name](rest)

    @property
    def main(self) -> Callable[[list[str] | None], int]:
        return _entry_point(self)


def _entry_point(command: Command | Group) -> Callable[[list[str] | None], int]:
    """An entry point ``main(argv=None)`` wrapped for user errors, Ctrl-C and closed pipes."""

    @report_user_errors
    def main(argv: list[str] | None = None) -> int:
        return command(list(sys.argv[1:] if argv is None else argv))

    main.__doc__ = command.summary
    return main


def _hydra_message(err: Exception) -> str:
    """Hydra's and OmegaConf's many-line messages as one line, without the search path."""
    text = str(err).split("Config search path:")[0]
    text = re.sub(r"\s*See https://hydra\.cc\S*", "", text)
    cause = getattr(err, "__cause__", None)
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({str(cause).splitlines()[0]})"
    return " ".join(text.split())[:300]


# --------------------------------------------------------------------------- Hydra entry points


def hydra_main(config: str, hydra_func: Callable[[], Any], argv: list[str] | None = None,
               rewrite: Callable[[list[str]], list[str]] | None = None) -> int:
    """Run a ``@hydra.main`` function as a cropseg command: group options checked first, the
    same error handling as every other command (wrap the task function with
    ``report_user_errors`` too: Hydra catches what escapes it). ``rewrite`` may turn the
    arguments into others first (train: ``ckpt_path=<run>/last.ckpt`` → that run's overrides)."""

    @report_user_errors
    def run() -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        if rewrite is not None:
            args = rewrite(args)
        check_group_overrides(config, args)
        sys.argv = [sys.argv[0], *args]
        hydra_func()
        return 0

    return run()
