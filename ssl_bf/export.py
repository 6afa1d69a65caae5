"""Convert a run's backbone for other libraries: `python -m ssl_bf.export RUN --to timm`.

RUN is a run directory or a backbone .safetensors. Writes backbone_timm.safetensors
beside it (or --out PATH): the tensors under timm's names, and in the file's metadata
the timm model name and create_model arguments. Load it with `ssl_bf.load_timm(PATH)`,
or by hand as the printed lines show.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ssl_bf.errors import UsageError, exit_on_usage_error

TIMM_FILE = "backbone_timm.safetensors"


USAGE = ("usage: python -m ssl_bf.export RUN_DIR|FILE.safetensors [--to timm] "
         "[--out FILE.safetensors]")


def parse_args(argv: list[str]) -> tuple[Path, Path | None]:
    """(source, out or None); every mistake is one UsageError line."""
    sources, out, rest = [], None, list(argv)
    while rest:
        arg = rest.pop(0)
        key, eq, value = arg.partition("=")
        if key in ("--to", "--out"):
            if not eq:
                if not rest:
                    raise UsageError(f"{key} needs a value ({USAGE})")
                value = rest.pop(0)
            if key == "--to" and value != "timm":
                raise UsageError(f"--to: '{value}' is not a known target (timm)")
            if key == "--out":
                out = Path(value)
                if out.suffix != ".safetensors":
                    raise UsageError(f"--out: {out} must end in .safetensors")
        elif arg.startswith("-"):
            raise UsageError(f"unknown option '{arg}' ({USAGE})")
        else:
            sources.append(Path(arg))
    if len(sources) != 1:
        raise UsageError(USAGE)
    return sources[0], out


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    source, out = parse_args(sys.argv[1:] if argv is None else argv)
    from ssl_bf.evaluation.load import load_target
    from ssl_bf.rundir.export import backbone_metadata
    from ssl_bf.rundir.timm_export import (
        create_timm_model,
        timm_spec,
        to_timm_state,
        write_timm_file,
    )

    target = load_target([f"checkpoint={source}"])
    meta = backbone_metadata(target.cfg.model, target.cfg.data.image_size)
    state = target.backbone.state_dict()
    out = out or (source if source.is_dir() else source.parent) / TIMM_FILE
    # fails here, before writing, if timm cannot take it
    create_timm_model(to_timm_state(state, meta), meta)
    write_timm_file(state, meta, out)
    name, kwargs = timm_spec(meta)
    call = ", ".join([repr(name)] + [f"{k}={v!r}" for k, v in kwargs.items()])
    print(f"wrote {out} (timm.create_model({call})"
          f"""{'; CIFAR stem: conv1 = 3x3 stride 1, maxpool = Identity'
               if meta.get('cifar_stem') == 'true' else ''})""")
    print(f"load it with: model = ssl_bf.load_timm({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
