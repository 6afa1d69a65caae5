"""Linear probe of a backbone: `accelerate launch eval/linear.py checkpoint=... [key=value ...]`.

    accelerate launch eval/linear.py checkpoint=runs/mocov3_bf                  # linear.mode=cached
    accelerate launch eval/linear.py checkpoint=runs/mocov3_bf linear.mode=standard
    accelerate launch --multi_gpu --num_processes 2 eval/linear.py checkpoint=random recipe=mocov3

`checkpoint=` as in eval/knn.py. The probe trains on the labelled train split
(data.eval_train: the pretraining images, or the whole balanced split - the default
under data.imbalance) and is scored on the test split; settings come from the
linear.* keys of the run's recipe (override any of them). Prints the epochs and a
table, then one JSON line {"linear_top1": ..., "linear_top5": ..., "linear_top1_groups":
{"many", "medium", "few"}, "linear_top1_per_class": [...]} (percent).
Raises if any backbone weight or BatchNorm statistic moved during the probe.
"""
import json
import sys

from ssl_bf.errors import exit_on_usage_error


def table(target, cfg, row: dict, train: int, test: int, processes: int) -> str:
    lin = cfg.linear
    schedule = f"step at {lin.milestones}" if lin.schedule == "step" else "cosine"
    return "\n".join([
        f"linear probe ({lin.mode}{f', {lin.copies} copies' if lin.mode == 'cached' else ''}), "
        f"{processes} process(es)",
        f"checkpoint  {target.name}",
        f"backbone    {cfg.model.backbone} (width {cfg.model.width}), "
        f"{cfg.data.image_size} px, frozen",
        f"data        {train} train / {test} test images of {cfg.data.root}",
        f"optimizer   SGD lr {lin.lr} per 256 (batch {lin.batch_size}), {schedule}, "
        f"{lin.epochs} epochs, wd {lin.weight_decay}",
        f"top-1       {row['linear_top1']:.2f}",
        f"top-5       {row['linear_top5']:.2f}",
        "groups      " + "  ".join(f"{g} {'-' if v is None else f'{v:.2f}'}"
                                   for g, v in row["linear_top1_groups"].items()),
        f"time        extract {row['extract_seconds']:.1f} s, train {row['train_seconds']:.1f} s"])


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    from ssl_bf.data.pipeline import default_workers, pretrain_class_counts
    from ssl_bf.evaluation.job import EvalJob
    from ssl_bf.evaluation.linear import linear_probe
    from ssl_bf.evaluation.load import open_for_eval
    from ssl_bf.evaluation.splits import labelled_splits, num_classes
    from ssl_bf.training.runtime import local_processes

    target, acc, backbone = open_for_eval(sys.argv[1:] if argv is None else argv)
    cfg = target.cfg
    train, test = labelled_splits(cfg)
    log = (lambda line: print(line, flush=True)) if acc.is_main_process else None
    job = EvalJob(cfg, backbone, acc, num_classes(train, test), pretrain_class_counts(cfg.data),
                  default_workers(cfg.data, local_processes()), log)
    row = linear_probe(job, train, test)
    if acc.is_main_process:
        print(table(target, cfg, row, len(train), len(test), acc.num_processes))
        print(json.dumps({**row, "linear_mode": cfg.linear.mode}), flush=True)
    acc.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
