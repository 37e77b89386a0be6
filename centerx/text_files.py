"""Reading the text files a user hands centerX (configs, class-name lists, label
files, image-id lists) as UTF-8, with a UTF-8 byte-order mark accepted, and an
error naming the file, the line and the byte where the text is not UTF-8."""

__all__ = ["TextFileError", "read_text", "read_lines"]


class TextFileError(ValueError):
    """A text file that cannot be decoded as UTF-8; the message names the file,
    the line and the byte."""


def read_text(path: str, what: str = "text file") -> str:
    """The whole of ``path`` decoded as UTF-8 (a leading BOM dropped).

    Args:
        path: the file.
        what: what the file is to the user ("config file", "YOLO label file"),
            named in the error.

    Raises:
        TextFileError: bytes that are not UTF-8; UTF-16 text (its byte-order mark) and
            a binary file (NUL bytes, which no other common text encoding has) said to be so.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise TextFileError(f"{what} '{path}' is UTF-16 text: save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8).")
    if b"\x00" in data[:8192]:
        raise TextFileError(
            f"{what} '{path}' is a binary file, not text (a model, weights or image file given in its place?)."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextFileError(
            f"{what} '{path}' is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column "
            f"{column} ({e.reason}). Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from None


def read_lines(path: str, what: str = "text file") -> list:
    """The lines of ``path`` (see :func:`read_text`), without line endings."""
    return read_text(path, what).splitlines()
