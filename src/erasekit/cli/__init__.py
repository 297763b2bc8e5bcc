"""`erasekit` command line. Each command family lives in its own module of this package and is added here."""

from __future__ import annotations

import importlib
import os

# transformers warns at import that torchvision is absent (erasekit never uses it); the CLI shows errors only
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import click

# command modules, each exposing click commands in `COMMANDS`; imported when the CLI starts
COMMAND_MODULES = ("erasekit.cli.common_cmds", "erasekit.cli.world_cmds", "erasekit.cli.erase_cmds",
                   "erasekit.cli.eval_cmds", "erasekit.cli.shield_cmds", "erasekit.cli.attack_cmds",
                   "erasekit.cli.imitation_cmds", "erasekit.cli.text_cmds", "erasekit.cli.mark_cmds",
                   "erasekit.cli.sixway_cmds", "erasekit.cli.sae_cmds")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="erasekit")
@click.option("--debug", is_flag=True, help="show the full traceback of an error instead of one line")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """erasekit: measure, erase, shield and attack concepts in text-to-image diffusion models."""
    ctx.obj = {"debug": debug}


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).COMMANDS:
        main.add_command(_cmd)
