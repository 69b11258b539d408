"""The quick reproduction profile (tier A claims) runs and passes, and writes its table."""
from statespaces.reproduce import CLAIMS
from statespaces.train.cli import main


def test_quick_profile_passes_and_writes_table(tmp_path, capsys):
    table = tmp_path / "REPRODUCTION.md"
    rc = main(["reproduce", "--quick", "--out", str(tmp_path / "runs"), "--table", str(table)])
    out = capsys.readouterr().out
    assert rc == 0, out
    text = table.read_text()
    for cid, c in CLAIMS.items():
        if c.tier == "A":
            assert f"| {cid}: " in text
    assert "**no**" not in text


def test_unknown_claim_lists_valid_ids(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="valid ids"):
        main(["reproduce", "Z9", "--out", str(tmp_path), "--table", str(tmp_path / "t.md")])
