"""cryptpw: SHA-crypt against the test vectors of Drepper's specification (also what glibc and openssl print)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner import cryptpw

# From "Unix crypt using SHA-256 and SHA-512" (Ulrich Drepper), section "Test vectors".
VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/"
     "y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8"
     "audkUEm0"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHH"
     "rsX."),
]


@pytest.mark.parametrize("setting, password, expected", VECTORS)
def test_spec_vectors(setting, password, expected):
    assert cryptpw.crypt(password, setting) == expected
    assert cryptpw.verify(password, expected)
    assert not cryptpw.verify(password + " ", expected)
    assert cryptpw.hash_problem(expected) is None


def test_a_whole_hash_is_a_setting_too():
    hashed = VECTORS[3][2]
    assert cryptpw.crypt("Hello world!", hashed) == hashed


@settings(max_examples=25, deadline=None)
@given(password=st.text(max_size=40), scheme=st.sampled_from(["5", "6"]))
def test_hash_password_round_trip(password, scheme):
    hashed = cryptpw.hash_password(password, scheme=scheme, rounds=1000)
    assert hashed.startswith(f"${scheme}$rounds=1000$") and cryptpw.hash_problem(hashed) is None
    assert cryptpw.verify(password, hashed)
    assert not cryptpw.verify(password + "x", hashed)


def test_salts_are_random():
    assert cryptpw.hash_password("pw") != cryptpw.hash_password("pw")


@pytest.mark.parametrize("text, words", [
    ("s3cret-pw", "never give the plain-text password"),
    ("", "is empty"),
    (None, "is empty"),
    (" " + VECTORS[3][2], "surrounding whitespace"),
    ("$1$abc$ZQ6G1J3hiS0tKQ3mRd1XV/", "cannot check"),
    ("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7", "cannot check"),
    ("$6$salt$tooshort", "wrong length"),
    ("$6$salt$" + "a" * 86 + "\n", "surrounding whitespace"),
])
def test_hash_problem_names_the_problem_never_the_value(text, words):
    problem = cryptpw.hash_problem(text)
    assert problem is not None and words in problem
    assert not (isinstance(text, str) and text.strip() and text.strip() in problem)
    assert not cryptpw.verify("s3cret-pw", text or "")


def test_crypt_refuses_other_schemes():
    with pytest.raises(ValueError, match=r"not a \$5\$ or \$6\$"):
        cryptpw.crypt("pw", "$1$salt")
