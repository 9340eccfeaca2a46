"""CLI command groups, one module per stage; each exposes `register(app)`."""

from prepcodec.commands import (
    codecs_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    models_cmd,
    pictures_cmd,
    proxy_cmd,
    train_cmd,
)

COMMAND_MODULES = [codecs_cmd, models_cmd, proxy_cmd, train_cmd, eval_cmd, export_cmd, demo_cmd, pictures_cmd]
