"""Run the fixed BP evaluation protocol (docs/bp-model.md) on the shipped challenge2015 records and print the honest table.

Splits the 60 records by record (seed 2015, 60/20/20), trains every candidate of
monitoring.bp.learning.candidate_estimators on the train split, chooses by validation MAE, sets the
split-conformal interval on validation, then reports validation and test tables (model vs
"carry the calibration value forward" vs "population mean"), the promotion gates, the data
fingerprint, and how long evaluating 30 records takes (read + protocol + predict).

No Django and no database.

    .venv/bin/python bench/bp_eval.py
    .venv/bin/python bench/bp_eval.py --json var/bp_eval.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitoring.bp import accuracy, learning, promotion_gates, protocol


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "recordings" / "challenge2015")
    parser.add_argument("--seed", type=int, default=protocol.SPLIT_SEED)
    parser.add_argument("--json", type=Path, default=None, help="also write the reports here")
    args = parser.parse_args()

    names = protocol.record_names(args.data)
    split = protocol.split_records(names, seed=args.seed)
    started = time.perf_counter()
    dataset = protocol.load_dataset(args.data, names)
    load_s = time.perf_counter() - started
    train, validation, test = (dataset.subset(part) for part in (split.train, split.validation, split.test))

    started = time.perf_counter()
    model = learning.train_bp_model(train, validation)
    train_s = time.perf_counter() - started
    validation_report = accuracy.evaluate(model, validation, cross_conformal=True)
    test_report = accuracy.evaluate(model, test)
    ok, reasons = promotion_gates.passes_promotion_gates(test_report, validation_report)

    started = time.perf_counter()
    accuracy.evaluate(model, protocol.load_dataset(args.data, names[:30]))
    thirty_s = time.perf_counter() - started

    fingerprint = protocol.fingerprint_records(args.data, split)
    print(f"{len(names)} records; split seed {split.seed}: {len(split.train)} train / {len(split.validation)} "
          f"validation / {len(split.test)} test records; data fingerprint {fingerprint.sha256[:16]}")
    print(f"train: {len(train.samples)} windows of {len(train.records)} records; chosen {model.name}")
    print("validation MAE (SBP, DBP mmHg) per candidate:")
    for name, mae in model.validation_mae_mmhg.items():
        print(f"  {name:32} {mae[0]:6.2f} {mae[1]:6.2f}")
    print(f"interval half-widths ({model.coverage:.0%}): SBP +/-{model.halfwidth_mmhg[0]:.1f}, "
          f"DBP +/-{model.halfwidth_mmhg[1]:.1f} mmHg")
    print("\n== validation split ==")
    print(accuracy.format_report(validation_report))
    print("\n== test split ==")
    print(accuracy.format_report(test_report))
    print(f"\npromotion gates: {'PASS' if ok else 'FAIL'}")
    for reason in reasons:
        print(f"  - {reason}")
    print(f"\ntimings: read + protocol of {len(names)} records {load_s:.2f} s; training {train_s:.2f} s; "
          f"evaluating 30 records (read + protocol + predict) {thirty_s:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "model": model.metadata(), "fingerprint": fingerprint.as_dict(), "validation": validation_report,
            "test": test_report, "gates": {"pass": ok, "reasons": reasons},
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
