"""The download header: any file name gives one valid `Content-Disposition` (RFC 6266)."""

from __future__ import annotations

import pytest

from ml_api.downloads import content_disposition


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.csv", "attachment; filename=\"cat.csv\"; filename*=UTF-8''cat.csv"),
        ("a\r\nSet-Cookie: x=1.csv",
         "attachment; filename=\"a__Set-Cookie: x=1.csv\"; "
         "filename*=UTF-8''a__Set-Cookie%3A%20x%3D1.csv"),
        ('say "hi"\\.csv', "attachment; filename=\"say _hi__.csv\"; "
                           "filename*=UTF-8''say%20%22hi%22%5C.csv"),
        ("名前 100%.csv", "attachment; filename=\"__ 100_.csv\"; "
                          "filename*=UTF-8''%E5%90%8D%E5%89%8D%20100%25.csv"),
    ],
    ids=["plain", "crlf", "quotes-backslash", "unicode-percent"],
)  # fmt: skip
def test_any_name_makes_one_valid_header(name: str, expected: str) -> None:
    assert content_disposition(name) == expected
