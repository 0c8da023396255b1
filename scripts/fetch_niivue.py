"""Copy NiiVue's browser bundle from the npm registry into the package (run by hand, never at run time).

``python scripts/fetch_niivue.py [--version 0.69.0]`` runs ``npm pack @niivue/niivue@VERSION`` in a
temporary folder, checks the package's license field (BSD-2-Clause), copies
``package/dist/niivue.umd.js`` to ``src/kidneyseg/reporting/static/niivue/`` and rewrites the sha256
in ``SOURCE.txt`` there.  The viewer (``kidneyseg serve``) and the report (``--viewer``) use only the
copied file; nothing is downloaded when they run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "src" / "kidneyseg" / "reporting" / "static" / "niivue"
DEFAULT_VERSION = "0.69.0"


def fetch(version: str, dest: Path = DEST) -> str:
    """Fetch ``@niivue/niivue@version`` with npm, copy its UMD bundle into ``dest``; return its sha256."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: apt-get install npm (or use the bundle already in the package)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([npm, "pack", f"@niivue/niivue@{version}", "--silent"], cwd=tmp, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(Path(tmp) / out) as tar:
            meta = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
            if meta.get("license") != "BSD-2-Clause":
                raise SystemExit(f"@niivue/niivue {version} has license {meta.get('license')!r}, not BSD-2-Clause")
            member = tar.extractfile("package/dist/niivue.umd.js")
            if member is None:
                raise SystemExit(f"@niivue/niivue {version} has no dist/niivue.umd.js")
            data = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "niivue.umd.js").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    source = dest / "SOURCE.txt"
    text = source.read_text(encoding="utf-8")
    text = re.sub(r"@niivue/niivue \S+ \(npm", f"@niivue/niivue {version} (npm", text)
    text = re.sub(r"sha256:\s+[0-9a-f]{64}", f"sha256:   {digest}", text)
    source.write_text(text, encoding="utf-8")
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"NiiVue version (default {DEFAULT_VERSION})")
    args = parser.parse_args(argv)
    digest = fetch(args.version)
    print(f"wrote {DEST / 'niivue.umd.js'} (@niivue/niivue {args.version}, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
