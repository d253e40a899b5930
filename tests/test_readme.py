"""The README's Python API example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## The Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("kmeans ") and out[1].startswith("scan ")
    assert float(out[0].split()[1]) > 50  # k-means on digits pixels scores ~70 ACC; chance is ~10
    assert out[-1].endswith("report.html") and (tmp_path / "runs/readme/report.html").exists()
