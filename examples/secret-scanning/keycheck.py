"""Tell a keyledger key from a string that only looks like one.

The key format: a prefix of 1 to 20 lower-case letters or digits, "_",
43 random base62 characters and a 6-character base62 checksum, the CRC-32
(IEEE, as zlib.crc32) of everything before it, most significant digit
first. Run as a program, it prints "valid" or "invalid" for each line of
standard input.
"""
import re
import sys
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAPE = re.compile(r"[a-z0-9]{1,20}_[0-9A-Za-z]{49}")


def valid(s):
    """Whether s is a key whose checksum holds."""
    if not SHAPE.fullmatch(s):
        return False
    crc = zlib.crc32(s[:-6].encode("ascii"))
    digits = ""
    for _ in range(6):
        digits = BASE62[crc % 62] + digits
        crc //= 62
    return crc == 0 and digits == s[-6:]


if __name__ == "__main__":
    for line in sys.stdin:
        print("valid" if valid(line.rstrip("\n")) else "invalid")
