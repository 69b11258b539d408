"""The quick reproduction profile (tier A claims) runs and writes its table; every claim whose
verdict does not rest on wall-clock timings passes (timing claims are reported, not asserted)."""
import pytest

from statespaces.reproduce import CLAIMS, run_claims
from statespaces.cli import main


@pytest.mark.slow   # fast tier: a training run / build / reproduction
def test_quick_profile_runs_and_exact_claims_pass(tmp_path):
    table = tmp_path / "REPRODUCTION.md"
    ids = sorted(c.id for c in CLAIMS.values() if c.tier == "A")
    rows = run_claims(ids, True, tmp_path / "runs", table)
    text = table.read_text()
    for row in rows:
        assert f"| {row['id']}: " in text
        assert not row["ours"].startswith("error"), row
        if not CLAIMS[row["id"]].timed:
            assert row["passed"], row


def test_unknown_claim_lists_valid_ids(tmp_path, capsys):
    """A user error: one line on stderr naming the valid ids, exit status 2 (``--debug`` re-raises)."""
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "Z9", "--out", str(tmp_path), "--table", str(tmp_path / "t.md")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "valid ids" in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="valid ids"):
        main(["reproduce", "Z9", "--out", str(tmp_path), "--table", str(tmp_path / "t.md"), "--debug"])


def test_rerunning_one_claim_keeps_the_other_rows(tmp_path):
    table = tmp_path / "R.md"
    run_claims(["A3", "A4"], True, tmp_path / "runs", table)
    first = table.read_text()
    run_claims(["A3"], True, tmp_path / "runs", table)
    text = table.read_text()
    assert text.count("| A4: ") == 1 and text.count("| A3: ") == 1
    a4 = [line for line in first.splitlines() if line.startswith("| A4: ")]
    assert a4 and a4[0] in text                  # untouched row kept verbatim
    assert text.index("| A3: ") < text.index("| A4: ")
