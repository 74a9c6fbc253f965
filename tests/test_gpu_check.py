"""tools/analysis_tools/gpu_check.py on the CPU: its one-line refusal and
the tables it prints on a GPU (docs/gpu.md)."""
import json
import sys

import pytest
import torch
from e2e import REPO, load_script

gpu_check = load_script(REPO / 'tools' / 'analysis_tools' / 'gpu_check.py')


def test_without_a_gpu_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(sys, 'argv', ['gpu_check.py'])
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main()
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out == '' and out.err.count('\n') == 1
    assert 'no CUDA GPU is visible' in out.err


def scalars(losses, skipped_at=None) -> list:
    lines = [json.dumps(dict(lr=0.1, data_time=0.0, iter=1, loss=9.0,
                             **({'skipped_steps': 1} if skipped_at == 1
                                else {})))]
    for i, loss in enumerate(losses, 2):
        record = dict(iter=i, loss=loss)
        if skipped_at is not None and i >= skipped_at:
            record['skipped_steps'] = 2
        lines.append(json.dumps(record))
    lines.append(json.dumps(dict(iter=len(losses) + 1, mIoU=50.0)))  # val
    return lines


def test_training_table_side_by_side():
    fp32 = gpu_check.read_scalars(scalars([2.0, 1.5, 1.0]))
    fp16 = gpu_check.read_scalars(scalars([2.0, 1.5, 1.25], skipped_at=3))
    assert fp32 == dict(losses=[(1, 9.0), (2, 2.0), (3, 1.5), (4, 1.0)],
                        skipped=0)
    assert fp16['skipped'] == 2
    fp32['bn_finite'], fp16['bn_finite'] = True, False
    table = gpu_check.training_table(dict(fp32=fp32, fp16=fp16), rows=2)
    assert table.splitlines() == [
        '| iteration | fp32 | fp16 |', '|---:|---:|---:|',
        '| 2 | 2.0000 | 2.0000 |', '| 4 | 1.0000 | 1.2500 |',
        '| skipped steps | 0 | 2 |', '| BN statistics finite | yes | NO |'
    ]
