# The redis plugin against a real redis-server (each test starts its own
# on a private unix socket), several real lexbusd nodes, and Exprsn-style
# workers written with ioredis and jsonwebtoken (npm ci into the build tree).
TESTS += redis/test_cluster.py redis/test_faults.py redis/test_exprsn.py redis/test_more.py
EXTRA_DIST += redis/test_cluster.py redis/test_faults.py redis/test_exprsn.py redis/test_more.py \
	redis/redisutil.py redis/worker.js redis/package.json redis/package-lock.json
