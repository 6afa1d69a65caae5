"""Compare runs: `python -m ssl_bf.report RUN_DIR [RUN_DIR ...]`.

Reads each run's metrics.jsonl and writes into the first run directory:
  report_curves.png     loss, lr and kNN top-1 against epoch, and kNN / loss against
                        wall-clock, every run overlaid
  report_per_class.png  the last kNN top-1 of each class, runs side by side as bars, and
                        against the class's image count in the pretraining split (log scale)
  report_embedding.png  a 2-D t-SNE of each run's test-split features, coloured by class
                        (needs the run's backbone and data; --no-embedding skips it)
  report.md             a table of final figures, many / medium / few included (also printed)
Needs the plots extra (`pip install -e ".[plots]"`: matplotlib, scikit-learn).
"""
