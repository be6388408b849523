# The data of BENCHMARKS.md's "agent serving 10 million rows from SQLite":
#   python3 memory-10m-sqlite.py ROWS DIR   (ROWS 10000000 there)
# One big site (DIR/big.db, table data) and three CSV sites of 20,000 rows
# (DIR/small0..2.csv), shaped like BenchmarkData: patients of 3-7 rows,
# x1..x3 ~ N(0,1), y with a site intercept and x1 slope and a patient
# effect, yb binary. Run memory-10m-agent.sh FORMULA next.
import sqlite3, random, math, sys, os
def rows(n, seed, a, b):
    rng = random.Random(seed); pid = 0; left = 0; pe = 0.0
    for i in range(n):
        if left == 0:
            pid += 1; left = rng.randint(3, 7); pe = 1.5 * rng.gauss(0, 1)
        left -= 1
        x1, x2, x3 = rng.gauss(0,1), rng.gauss(0,1), rng.gauss(0,1)
        y = 10 + a + (2 + b) * x1 - x2 + 0.5 * x3 + pe + rng.gauss(0, 1)
        eta = -0.5 + 0.4*x1 - 0.3*x2 + 0.2*x3 + 0.25*a
        yb = 1 if rng.random() < 1/(1+math.exp(-eta)) else 0
        yield (pid, x1, x2, x3, y, yb)
d = sys.argv[2]
os.makedirs(d, exist_ok=True)
db = d + '/big.db'
if os.path.exists(db): os.remove(db)
c = sqlite3.connect(db)
c.execute('PRAGMA journal_mode=OFF'); c.execute('PRAGMA synchronous=OFF')
c.execute('CREATE TABLE data (patient INTEGER, x1 REAL, x2 REAL, x3 REAL, y REAL, yb INTEGER)')
c.executemany('INSERT INTO data VALUES (?,?,?,?,?,?)', rows(int(sys.argv[1]), 1, 0.8, 0.2))
c.commit(); c.close()
for k, (a, b) in enumerate([(-1.5, -0.3), (0.4, 0.5), (2.1, -0.1)]):
    with open(f'{d}/small{k}.csv', 'w') as f:
        f.write('patient,x1,x2,x3,y,yb\n')
        for r in rows(20000, 10 + k, a, b): f.write(','.join(map(str, r)) + '\n')
