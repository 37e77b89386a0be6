"""Printing (and optionally saving) a benchmark's table: shared by the scripts here."""
import os


def report(title: str, table: str, output: str = "") -> None:
    """Print ``title``, a blank line and ``table``; write the same to ``output`` when given."""
    text = f"{title}\n\n{table}\n"
    print(text, end="")
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            f.write(text)
