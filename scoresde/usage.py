"""What each command takes: its `--help` text and shell completion (bash, zsh).

Both read the command's config through hydra's config loader and list only the config groups in
the command's own defaults list (`sample` takes `solver=`, not `data=`). Neither imports torch.

Completion: `score-sde -sc install=bash` (or `score-sde train -sc install=bash`) prints a script
to `eval` in a shell; it registers one function for `score-sde`, which asks
`score-sde -sc query=bash` with the shell's COMP_LINE and COMP_POINT for the words that can
follow: a command after `score-sde`, then the command's groups, options, keys and values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import OmegaConf

from score_sde.config import register_configs

COMMANDS = {
    "train": "train a score model, then sample and compute the test NLL",
    "sample": "draw samples: run=<run folder> or pretrained=<Hub id or folder> [solver=ddim]",
    "likelihood": "exact NLL / bits-per-dim of held-out data: run=<run folder> or pretrained= data=",
    "fid": "Frechet distance and KID of two image sets: samples=<npz|folder> reference=<...>",
}
FLAGS = {
    "train": ["--help", "--cfg", "-m", "--multirun", "-sc"],
    "sample": ["--help", "--cfg", "-sc"],
    "likelihood": ["--help", "--cfg", "-sc"],
    "fid": ["--help", "--cfg", "-sc"],
}
SHELLS = ("bash", "zsh")

_SCRIPT = """_score_sde_complete()
{
    local line=${COMP_LINE:0:COMP_POINT}
    local cur=${line##*[[:space:]]}
    local word=${COMP_WORDS[COMP_CWORD]}
    local prefix=${cur%"$word"}
    local choices
    choices=$(COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" "${COMP_WORDS[0]}" -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "$cur"))
    COMPREPLY=("${COMPREPLY[@]#"$prefix"}")
}
complete -o nospace -o default -F _score_sde_complete score-sde
"""


@contextmanager
def _loader() -> Iterator[Any]:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    with initialize_config_module(config_module="score_sde.conf", version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def _compose(loader: Any, command: str, overrides: list[str]) -> tuple[Any, dict[str, tuple[str, list[str]]]]:
    """The command's config (without hydra's node) and {group: (chosen option, all options)} of
    the groups in its defaults list."""
    from hydra.types import RunMode
    from omegaconf import open_dict

    cfg = loader.load_configuration(command, overrides, RunMode.RUN)
    choices = {g: c for g, c in cfg.hydra.runtime.choices.items() if not g.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, {g: (c, loader.get_group_options(g)) for g, c in sorted(choices.items())}


def choices(command: str, overrides: list[str]) -> dict[str, str]:
    """The option chosen in each of the command's groups, e.g. {"data": "ring", "sde": "vp", ...}."""
    with _loader() as loader:
        return {g: chosen for g, (chosen, _) in _compose(loader, command, overrides)[1].items()}


def help_text(command: str) -> str:
    """The `score-sde <command> --help` text: the groups it takes and its settings' defaults."""
    with _loader() as loader:
        cfg, groups = _compose(loader, command, [])
    lines = [f"usage: score-sde {command}{' [group=option ...]' if groups else ''} [key=value ...]"
             f"{' [-m]' if '-m' in FLAGS[command] else ''} [--cfg job] [-sc install=bash]", "",
             f"{COMMANDS[command]}.", ""]
    if groups:
        lines += ["Config groups (group=option; the default in brackets):"]
        lines += [f"  {g}: " + ", ".join(f"[{o}]" if o == chosen else o for o in options)
                  for g, (chosen, options) in groups.items()]
        lines += [""]
    lines += ["Settings (key=value; an option's own keys as group.key=value), with their defaults:",
              "", OmegaConf.to_yaml(cfg).rstrip(), "",
              "--cfg job prints the composed config without running; -sc install=bash (or zsh) "
              "prints a shell completion script."]
    if command == "train":
        lines += ["-m runs a sweep: `score-sde train -m sde=vp,subvp,ve` trains one run per value "
                  "into outputs/sweep-sde/<time>/sde-<value> and prints a table of their results."]
    return "\n".join(lines)


def script(shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh", through bashcompinit)."""
    if shell not in SHELLS:
        raise ValueError(f"shell completion supports {', '.join(SHELLS)}, got {shell!r}")
    return ("autoload -Uz bashcompinit && bashcompinit\n" if shell == "zsh" else "") + _SCRIPT


def complete(line: str, point: int | None = None) -> list[str]:
    """The words that can replace the last word of `line[:point]` (a shell's COMP_LINE / POINT):
    commands after `score-sde`, then the command's flags, groups, options, keys and values."""
    from hydra.plugins.completion_plugin import DefaultCompletionPlugin

    line = line[:point] if point is not None else line
    words = line.split()
    new_word = line.endswith(" ") or not words
    if len(words) - (0 if new_word else 1) < 2:  # completing the command
        prefix = "" if new_word else words[-1]
        return [c for c in [*COMMANDS, "--help"] if c.startswith(prefix)]
    command = words[1]
    if command not in COMMANDS:
        return []
    rest = words[2:]
    current = "" if new_word else rest[-1]
    if current.startswith("-"):
        return [f for f in FLAGS[command] if f.startswith(current)]
    rest = [w for w in rest if not w.startswith("-")]
    from hydra.core.object_type import ObjectType

    with _loader() as loader:
        found = DefaultCompletionPlugin(loader)._query(
            command, " ".join(rest) + (" " if new_word else ""))
        others = set(loader.get_group_options("", results_filter=ObjectType.GROUP))
        others -= set(_compose(loader, command, [])[1]) | {"hydra"}
    if command != "train":  # sample and likelihood do not run through hydra's launcher
        others.add("hydra")

    def foreign(word: str) -> bool:  # a group (or hydra's settings) this command does not take
        head = word.lstrip("+~")
        for g in others:
            sep = head[len(g):len(g) + 1] if head.startswith(g) else None
            if sep in ("=", "/", "") or (sep == "." and g == "hydra"):
                return True
        return False

    return [w for w in found if not foreign(w)]
