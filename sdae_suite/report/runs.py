"""Run dirs as the benchmark report reads them: only what our tools and mmengine write (the formats of
sdae_suite/contracts.py), never console text.

  <work_dir>/run_status.json                    status, kind, recipe, pretrained checkpoint and its metadata
  <work_dir>/test_results.json                  {"task", "recipe", "metrics": <runner.test() dict>, "status": "ok", ...}
  <work_dir>/<timestamp>/vis_data/scalars.json  mmengine's LoggerHook log, one JSON object per line (train and val)
  <work_dir>/<timestamp>/vis_data/config.py     the config as trained (read safely, never executed)

Every problem (missing file, garbage or truncated JSON, wrong types) becomes a note naming the file: the report must be
written for whatever can be read.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from sdae_suite.contracts import RUN_STATUS_FILE, TEST_RESULTS_FILE, RunKind, RunState, RunStatus, TestResults

TIMESTAMP_DIR = re.compile(r'^\d{8}_\d{6}$')  # mmengine's Runner.timestamp, e.g. 20261126_101500


@dataclass(frozen=True)
class Metric:
    name: str  # our id, used in results.json / results.csv
    key: str  # key in the dict runner.test() returns
    label: str
    task: str  # one of TASKS
    scale: float  # mmdet's CocoMetric reports fractions; papers (and this report) show percentages
    main: bool  # in the main table (the others are in the expanded tables, JSON and CSV)
    optional: bool = False  # a main-table column only when some row has it (top-1 max: only runs that validated)


def _coco(iou_type: str, word: str) -> list[Metric]:
    suffixes = [('', ''), ('_50', '50'), ('_75', '75'), ('_s', 'S'), ('_m', 'M'), ('_l', 'L')]
    return [Metric(f'{iou_type}_AP{s.lstrip("_")}', f'coco/{iou_type}_mAP{s}', f'AP{lab}^{word}', 'det', 100.0, s == '')
            for s, lab in suffixes]


def _cls(task: str, prefix: str, word: str) -> list[Metric]:
    """top-1 / top-5 of the tested (last-epoch) checkpoint and top-1 max, the best top-1 over the epochs validated
    during training (tools/test.py; the number MAE's and SdAE's main_finetune.py print), all in percent."""
    return [Metric(f'{prefix}_top1', 'accuracy/top1', f'{word} top-1', task, 1.0, True),
            Metric(f'{prefix}_top5', 'accuracy/top5', f'{word} top-5', task, 1.0, True),
            Metric(f'{prefix}_top1_max', 'accuracy/top1_max', f'{word} top-1 max', task, 1.0, True, optional=True)]


METRICS: list[Metric] = [
    *_coco('bbox', 'box'), *_coco('segm', 'mask'),
    # mmseg's IoUMetric already reports percentages.
    Metric('mIoU', 'mIoU', 'mIoU', 'seg', 1.0, True),
    Metric('mAcc', 'mAcc', 'mAcc', 'seg', 1.0, True),
    Metric('aAcc', 'aAcc', 'aAcc', 'seg', 1.0, True),
    # Classification (cls_configs/): end-to-end fine-tuning and linear probing; SdAETopKAccuracy reports percentages.
    *_cls('cls_ft', 'ft', 'fine-tune'), *_cls('cls_linear', 'lin', 'linear-probe'),
]
METRIC_BY_NAME = {m.name: m for m in METRICS}
TASKS = ('det', 'seg', 'cls_ft', 'cls_linear')
CLS_TASKS = ('cls_ft', 'cls_linear')
TASK_TITLES = {'det': 'COCO (Mask R-CNN)', 'seg': 'ADE20K (UperNet)', 'cls_ft': 'Classification fine-tuning',
               'cls_linear': 'Classification linear probing'}
# The validation metric the fine-tuning curves show.
CURVE_METRIC = {'det': METRIC_BY_NAME['bbox_AP'], 'seg': METRIC_BY_NAME['mIoU'],
                'cls_ft': METRIC_BY_NAME['ft_top1'], 'cls_linear': METRIC_BY_NAME['lin_top1']}
# The data a classification recipe runs on is the last '_' field of its name (mmpretrain's naming convention, e.g.
# sdae_vit-base-p16_8xb128-ft-100e_in1k): how the column titles name it.
CLS_DATA = {'in1k': 'IN-1K'}
DEMO_DATA = 'demo'  # sdae_vit-tiny-p8_1xb64-ft_demo: the demo's small class-folder pool, not ImageNet


def cls_data(recipes: list[str]) -> str | None:
    """The data field of a classification column's recipes ('in1k', 'demo', ...), 'mixed' when they differ, None when
    there is no recipe name to read it from."""
    fields = {r.rsplit('_', 1)[-1] for r in recipes if r and r != '?' and '_' in r}
    return None if not fields else fields.pop() if len(fields) == 1 else 'mixed'


def data_title(metric: Metric, data: str | None) -> str:
    """A column title that says what the numbers are: 'COCO AP^box', 'ADE mIoU', 'IN-1K fine-tune top-1' for
    recipes named ..._in1k, 'fine-tune top-1 (demo pool)' for the demo recipes (..._demo), 'fine-tune top-1 (<field>)'
    for other data and '(mixed data)' for a column of several (--allow-mixed-recipes)."""
    if metric.task == 'det':
        return f'COCO {metric.label}'
    if metric.task == 'seg':
        return f'ADE {metric.label}'
    if data in CLS_DATA:
        return f'{CLS_DATA[data]} {metric.label}'
    if data == DEMO_DATA:
        return f'{metric.label} (demo pool)'
    if data == 'mixed':
        return f'{metric.label} (mixed data)'
    return f'{metric.label} ({data})' if data else metric.label


def column_title(metric: Metric, recipes: list[str]) -> str:
    """The title of `metric`'s column, whose runs used `recipes` (see data_title)."""
    return data_title(metric, cls_data(recipes) if metric.task in CLS_TASKS else None)

# What a run looks like in the report. 'ok' is the only state with final numbers.
# 'invalid': the test result holds values that are not finite numbers, and no valid one.
STATES = ('ok', 'running', 'stalled', 'not tested', 'test failed', 'invalid', 'failed', 'corrupt', 'unknown',
          'missing')


@dataclass
class Run:
    path: Path
    kind: str | None = None  # one of TASKS or pretrain (None: unknown)
    status: str | None = None  # as run_status.json says
    state: str = 'unknown'  # one of STATES, or 'finished' for pretraining runs
    recipe: str | None = None
    config: str | None = None
    pretrained: str | None = None
    pretrained_meta: dict | None = None
    started: str | None = None
    ended: str | None = None
    error: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)  # Metric.name -> display units; None = n/a (-1)
    invalid: dict[str, Any] = field(default_factory=dict)  # Metric.name -> a stored value that is no finite number
    train: list[dict] = field(default_factory=list)  # scalars.json training lines, sorted by step
    val: list[dict] = field(default_factory=list)  # scalars.json validation lines, sorted by step
    progress: str | None = None  # e.g. 'epoch 3/12'
    config_flat: dict[str, Any] | None = None  # the dumped config, flattened ('a.b.c' -> value)
    last_update: float | None = None
    label: str | None = None  # from --name
    notes: list[str] = field(default_factory=list)  # problems, each naming its file


def is_run_dir(path: Path) -> bool:
    if (path / RUN_STATUS_FILE).is_file() or (path / TEST_RESULTS_FILE).is_file():
        return True
    return bool(_log_files(path))


def find_run_dirs(root: Path) -> list[Path]:
    """All run dirs at or below `root`; a run dir's own sub-folders are not searched."""
    if is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if here != root and is_run_dir(here):
            found.append(here)
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    return found


def _log_files(work_dir: Path) -> list[Path]:
    try:
        subdirs = sorted(p for p in work_dir.iterdir() if p.is_dir() and TIMESTAMP_DIR.match(p.name))
    except OSError:
        return []
    return [p / 'vis_data' / 'scalars.json' for p in subdirs if (p / 'vis_data' / 'scalars.json').is_file()]


# How to get a good copy of each file back, for the messages.
FIXES = {RUN_STATUS_FILE: 'resume the run with the same command and --resume to rewrite it',
         TEST_RESULTS_FILE: 'rerun tools/test.py CONFIG CHECKPOINT on this work dir'}


def read_json_dict(path: Path) -> tuple[dict | None, str | None]:
    """(content, None) or (None, a message naming the file, what is wrong with it and the fix)."""
    fix = FIXES.get(path.name, 'rewrite it')
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
        return None, f'{path}: cannot be read ({e})'
    if not text.strip():
        return None, f'{path}: empty file (the run was killed while creating it?); {fix}'
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, (f'{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}): the file is truncated or '
                      f'corrupt; {fix}')
    if not isinstance(data, dict):
        return None, f'{path}: expected a JSON object, found {type(data).__name__}; {fix}'
    return data, None


def is_finite_number(v: Any) -> bool:
    """A real, finite number (JSON's NaN / Infinity, strings and booleans are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_scalars(work_dir: Path, notes: list[str]) -> tuple[list[dict], list[dict]]:
    """Training and validation lines of every mmengine log in the run, later sessions (resumes) winning per step."""
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for log in _log_files(work_dir):
        bad = []
        try:
            lines = log.read_text(encoding='utf-8', errors='replace').splitlines()
        except OSError as e:
            notes.append(f'{log}: cannot be read ({e})')
            continue
        last_train: dict | None = None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.append(i)
                continue
            if not isinstance(rec, dict) or not is_finite_number(rec.get('step')):
                bad.append(i)
                continue
            # LoggerHook writes training lines with lr/loss* and validation lines with the metrics only.
            is_train = 'lr' in rec or any(k.startswith('loss') for k in rec)
            if is_train:
                last_train = rec
            elif last_train is not None and 'epoch' not in last_train and rec['step'] < last_train['step']:
                # An iteration-based run logged with LoggerHook(log_metric_by_epoch=True), mmengine's default, stamps
                # every validation with step = epoch = 0; it ran right after the last training line before it.
                rec = dict(rec, step=last_train['step'])
            (train if is_train else val)[int(rec['step'])] = rec
        if bad:
            where = f'line {bad[0]}' if len(bad) == 1 else f'{len(bad)} lines (first: {bad[0]})'
            notes.append(f'{log}: {where} not valid JSON log records (truncated write?); they are skipped')
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def _literal(node: ast.AST) -> Any:
    """Value of a dumped-config expression without executing it (configs in other people's work dirs are untrusted
    code, so no Config.fromfile): literals, dict(...) calls, containers; anything else is kept as its source text."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {str(_literal(k)): _literal(v) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args
            and all(kw.arg for kw in node.keywords)):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand,
                                                                                                   ast.Constant):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    return ast.unparse(node)


def flatten(value: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f'{prefix}.{k}' if prefix else str(k)))
        return out
    return {prefix: value}


def read_dumped_config(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as e:
        notes.append(f'{path}: dumped config cannot be parsed ({e.__class__.__name__}: {e})')
        return None
    cfg = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            cfg[stmt.targets[0].id] = _literal(stmt.value)
    return flatten(cfg)


def _progress(run: Run) -> str | None:
    if not run.train:
        return None
    last = run.train[-1]
    cfg = run.config_flat or {}
    if is_finite_number(last.get('epoch')) and cfg.get('train_cfg.type') != 'IterBasedTrainLoop':
        total = cfg.get('train_cfg.max_epochs')
        return f'epoch {int(last["epoch"])}' + (f'/{total}' if is_finite_number(total) else '')
    total = cfg.get('train_cfg.max_iters')
    return f'iter {int(last["step"])}' + (f'/{total}' if is_finite_number(total) else '')


def _invalid_reason(raw: Any) -> str:
    """Why a stored metric value is not one, in words a user can act on."""
    if isinstance(raw, bool):
        return 'a boolean'
    if isinstance(raw, str):
        try:
            float(raw)
        except ValueError:
            return 'a string'
        return 'a number stored as a string: not written by tools/test.py?'
    if isinstance(raw, float) and math.isnan(raw):
        return 'NaN: the evaluation produced no number'
    if isinstance(raw, float):
        return 'infinite'
    return 'null' if raw is None else f'a JSON {type(raw).__name__}'


def _invalid_groups(items: dict[str, Any], why: bool = True) -> list[str]:
    """'k1, k2 = nan are not numbers (NaN: ...)' per distinct value: one readable line for a file full of NaNs."""
    by_value: dict[str, list[str]] = {}
    raws: dict[str, Any] = {}
    for key, raw in items.items():
        by_value.setdefault(repr(raw), []).append(key)
        raws[repr(raw)] = raw
    out = []
    for value, keys in by_value.items():
        names = ', '.join(keys[:3]) + (f' and {len(keys) - 3} more' if len(keys) > 3 else '')
        text = f'{names} = {value}'
        if why:
            verb = ' is not a number' if len(keys) == 1 else ' are not numbers'
            text += f'{verb} ({_invalid_reason(raws[value])})'
        out.append(text)
    return out


def _metrics_from_test(metrics: Any, path: Path, task: str | None, notes: list[str],
                       invalid: dict[str, Any]) -> dict[str, float | None]:
    """Known metrics in display units. A value that is not a finite number goes into `invalid` (and a note naming the
    file): it must neither read as "n/a" (no ground truth of that size) nor enter a mean or a plot."""
    if not isinstance(metrics, dict):
        notes.append(f'{path}: "metrics" is {type(metrics).__name__}, expected an object')
        return {}
    out: dict[str, float | None] = {}
    bad: dict[str, Any] = {}  # key in the file -> its value
    for m in METRICS:
        if task and m.task != task:
            continue
        # Exact key first; a metric configured with another prefix ('val/coco/bbox_mAP') is still found.
        key = m.key if m.key in metrics else next(
            (k for k in metrics if isinstance(k, str) and k.endswith('/' + m.key)), None)
        if key is None:
            continue
        raw = metrics[key]
        if not is_finite_number(raw):
            invalid[m.name] = raw
            bad[key] = raw
            continue
        if m.scale != 1.0 and raw == -1:
            out[m.name] = None  # pycocotools' -1: no ground truth of that size
            continue
        if m.scale != 1.0 and raw > 1.0:
            notes.append(f'{path}: {key} = {raw} > 1, expected a fraction from CocoMetric; shown unscaled')
            out[m.name] = float(raw)
            continue
        out[m.name] = float(raw) * m.scale
    if bad:
        notes.append(f'{path}: {"; ".join(_invalid_groups(bad))}: invalid value{"s" if len(bad) > 1 else ""}, shown as '
                     f'INVALID and left out of means and plots; {FIXES.get(path.name, "rewrite it")}')
    if task == 'seg' and all(is_finite_number(metrics.get(k)) and 0 < metrics[k] <= 1 for k in ('mIoU', 'aAcc')):
        notes.append(f'{path}: mIoU/aAcc are <= 1: fractions where mmseg reports percentages? shown as they are')
    return out


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _path_or_none(v: Any, file: Path, notes: list[str]) -> str | None:
    # Anything but null is a checkpoint: a malformed value must not turn a pretrained run into 'random init'.
    if v is None or (isinstance(v, str) and v):
        return v
    notes.append(f'{file}: "pretrained" is {v!r}, expected a checkpoint path or null')
    return str(v)


def read_run(path: Path, stale_after_s: float, now: float | None = None) -> Run:
    run = Run(path=path)
    now = time.time() if now is None else now
    mtimes = []

    status_file = path / RUN_STATUS_FILE
    status = None
    if status_file.is_file():
        mtimes.append(status_file.stat().st_mtime)
        status, err = read_json_dict(status_file)
        if err:
            run.notes.append(err)
    else:
        run.notes.append(f'{status_file}: missing (not written by our tools?)')
    if status:
        run.status = _str_or_none(status.get('status'))
        run.kind = _str_or_none(status.get('kind'))
        run.recipe = _str_or_none(status.get('recipe'))
        run.config = _str_or_none(status.get('config'))
        run.pretrained = _path_or_none(status.get('pretrained'), status_file, run.notes)
        meta = status.get('pretrained_meta')
        run.pretrained_meta = meta if isinstance(meta, dict) else None
        run.started, run.ended = _str_or_none(status.get('started')), _str_or_none(status.get('ended'))
        run.error = _str_or_none(status.get('error'))
        if run.status not in get_args(RunState):
            run.notes.append(f'{status_file}: unknown status {status.get("status")!r}')
        missing = [f.name for f in fields(RunStatus) if f.name not in status]
        if missing:
            run.notes.append(f'{status_file}: no {", ".join(missing)} (not the run status format of this suite)')

    test_file = path / TEST_RESULTS_FILE
    test = test_err = None
    if test_file.is_file():
        mtimes.append(test_file.stat().st_mtime)
        test, test_err = read_json_dict(test_file)
        if test_err:
            run.notes.append(test_err)
    if test:
        run.kind = run.kind or _str_or_none(test.get('task'))
        if _str_or_none(test.get('recipe')) and run.recipe and test['recipe'] != run.recipe:
            run.notes.append(f'{test_file}: recipe {test["recipe"]!r} differs from run_status.json ({run.recipe!r})')
        run.recipe = run.recipe or _str_or_none(test.get('recipe'))
        run.config = run.config or _str_or_none(test.get('config'))
        if status is None or 'pretrained' not in status:
            run.pretrained = _path_or_none(test.get('pretrained'), test_file, run.notes)
            meta = test.get('pretrained_meta')
            run.pretrained_meta = meta if isinstance(meta, dict) else None
        run.metrics = _metrics_from_test(test.get('metrics'), test_file, run.kind, run.notes, run.invalid)
        missing = sorted(TestResults.__required_keys__ - set(test))
        if missing:
            run.notes.append(f'{test_file}: no {", ".join(missing)} (not the test result format of this suite)')

    if run.kind not in (None, *get_args(RunKind)):
        run.notes.append(f'{status_file}: unknown kind {run.kind!r}')
    run.train, run.val = read_scalars(path, run.notes)
    mtimes += [p.stat().st_mtime for p in _log_files(path)]
    run.last_update = max(mtimes) if mtimes else None
    # The training config as run (--cfg-options included): the config.py mmengine's visualizer saves next to the
    # latest training log. <work_dir>/<recipe>.py is a fallback only: tools/test.py's Runner overwrites it.
    logs = _log_files(path)
    dumped = logs[-1].parent / 'config.py' if logs else None
    if not (dumped and dumped.is_file()) and run.config:
        dumped = path / Path(run.config).name
    if dumped and dumped.suffix == '.py' and dumped.is_file():
        run.config_flat = read_dumped_config(dumped, run.notes)
    run.progress = _progress(run)

    # What the report shows. Final numbers need a finished (or status-less) run and a readable, ok test result.
    test_ok = bool(test) and test.get('status') == 'ok'
    stalled = run.last_update is not None and now - run.last_update > stale_after_s
    if run.status == 'failed':
        run.state = 'failed'
    elif run.status == 'running':
        run.state = 'stalled' if stalled else 'running'
        if stalled:
            hours = (now - run.last_update) / 3600
            run.notes.append(f'{status_file}: says running but nothing was written for {hours:.1f} h (killed? resume '
                             'it with the same command)')
    elif run.kind == 'pretrain':
        run.state = 'finished' if run.status == 'finished' else 'corrupt' if status_file.is_file() else 'unknown'
    elif test_ok:
        run.state = 'ok'
    elif test_err:
        run.state = 'corrupt'
    elif test is not None:
        run.state = 'test failed'
        run.error = run.error or _str_or_none(test.get('error')) or f'{test_file}: status {test.get("status")!r}'
    elif run.status == 'finished':
        run.state = 'not tested'
    elif status_file.is_file():
        run.state = 'corrupt'
    else:
        run.state = 'unknown'
    if run.state == 'ok' and not run.metrics and run.invalid:
        run.state = 'invalid'
        run.error = (f'{test_file}: no valid {run.kind or "known"} metric, every one is invalid: '
                     + '; '.join(_invalid_groups({METRIC_BY_NAME[k].key: v for k, v in run.invalid.items()}, False)))
    elif run.state == 'ok' and not run.metrics:
        run.state = 'test failed'
        run.error = f'{test_file}: no {run.kind or "known"} metric in "metrics"'
        if run.kind == 'det':  # mmdet's CocoMetric returns {} when the model detected nothing on the whole test set
            run.error += ' (CocoMetric returns none when the model made no detection at all: train longer?)'
    return run
