"""Writes Redis SET commands (RESP) for keys FIRST..FIRST+COUNT to stdout,
values of about 1 KiB of varied JSON-like text; the Redis benchmarks pipe
it into `redis-cli --pipe`.

    python3 bench/lib/redis_keys.py SEED FIRST COUNT
"""
import random
import sys

seed, first, count = map(int, sys.argv[1:])
rnd = random.Random(seed)
words = ("agent task pending running done failed region eu us ap model cache session user "
         "token refresh login logout upload metric cpu memory disk latency p99 retry queue").split()
out = sys.stdout
for i in range(first, first + count):
    kind = ("agent", "task:pending", "session", "metrics", "model:cache")[i % 5]
    body = " ".join(rnd.choice(words) + str(rnd.randrange(100000)) for _ in range(rnd.randrange(60, 120)))
    val = '{"id":%d,"seen":%d,"h":"%032x","body":"%s"}' % (i, 1700000000 + rnd.randrange(10**7), rnd.getrandbits(128), body)
    out.write("*3\r\n$3\r\nSET\r\n$%d\r\n%s:%d\r\n$%d\r\n%s\r\n" % (len(kind) + 1 + len(str(i)), kind, i, len(val), val))
