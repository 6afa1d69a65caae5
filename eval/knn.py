"""kNN top-1 of a backbone:
`python eval/knn.py checkpoint=RUN_DIR|FILE.safetensors|random [key=value ...]`.

    python eval/knn.py checkpoint=runs/mocov3_bf
    python eval/knn.py checkpoint=backbone.safetensors recipe=mocov3 data.root=data/cifar10
    python eval/knn.py checkpoint=random recipe=mocov3 knn.k=[10,20,200] knn.test_subset=2000

Bank = the labelled train split (data.eval_train: the pretraining images, or the whole
balanced split - the default under data.imbalance), queries = the test split
(knn.test_subset caps it); top-1 is also given per class and per many / medium / few
group of classes (ranked by their count in the pretraining split). Prints a table,
then one JSON line: `knn_top1` is the top-1 (percent) at the last k of knn.k - the
number the pretraining monitor logs.
Several processes (`accelerate launch`) share the feature extraction.
"""
import json
import sys

from ssl_bf.errors import exit_on_usage_error


def table(target, cfg, row: dict, bank: int, queries: int, dim: int) -> str:
    lines = [f"kNN (Wu et al. 2018): weighted vote exp(s/T), T={cfg.knn.temperature}",
             f"checkpoint  {target.name}",
             f"backbone    {cfg.model.backbone} (width {cfg.model.width}), "
             f"{cfg.data.image_size} px, "
             f"{dim}-d features",
             f"bank        {bank} train images of {cfg.data.root}",
             f"queries     {queries} test images",
             f"{'k':>6}  {'top-1':>7}  {'top-5':>7}"]
    lines += [f"{k:>6}  {row[f'knn_top1_k{k}']:7.2f}  {row[f'knn_top5_k{k}']:7.2f}"
              for k in cfg.knn.k]
    groups = row["knn_top1_groups"]
    lines.append("groups      " + "  ".join(
        f"{g} {'-' if v is None else f'{v:.2f}'}" for g, v in groups.items())
        + "  (top-1 at the last k; classes ranked by pretraining count)")
    lines.append(f"time        {row['knn_seconds']:.1f} s")
    return "\n".join(lines)


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    from ssl_bf.data.pipeline import default_workers, pretrain_class_counts
    from ssl_bf.evaluation.features import eval_loader
    from ssl_bf.evaluation.job import EvalJob
    from ssl_bf.evaluation.load import open_for_eval
    from ssl_bf.evaluation.monitor import knn_datasets, knn_evaluate
    from ssl_bf.evaluation.splits import num_classes
    from ssl_bf.training.runtime import local_processes

    target, acc, backbone = open_for_eval(sys.argv[1:] if argv is None else argv)
    cfg = target.cfg
    datasets = knn_datasets(cfg)
    workers = default_workers(cfg.data, local_processes())
    loaders = [eval_loader(ds, acc, cfg.knn.batch_size, workers) for ds in datasets]
    job = EvalJob(cfg, backbone, acc, num_classes(*datasets), pretrain_class_counts(cfg.data))
    row = knn_evaluate(job, loaders)
    if acc.is_main_process:
        print(table(target, cfg, row, len(datasets[0]), len(datasets[1]), backbone.dim))
        print(json.dumps(row), flush=True)
    acc.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
