"""BadImageLog: counts every replacement, names each unreadable file once."""
import torch

from ssl_bf.data.bad_images import BadImageLog


def test_counts_every_replacement_and_names_each_file_once(capsys):
    log = BadImageLog(lambda i: f"img{i}.png")
    assert log.note(torch.tensor([-1, 3, 3, -1, 5]), 2) == 5  # 2 earlier + 3 in this batch
    first = capsys.readouterr().err.splitlines()
    assert len(first) == 2 and first[0].endswith("img3.png") and first[1].endswith("img5.png")
    assert "(3 replacements so far)" in first[0]
    assert log.note(torch.tensor([5, -1]), 5) == 6
    assert capsys.readouterr().err == ""  # img5 was named already
    assert log.note(torch.full((4,), -1), 6) == 6
