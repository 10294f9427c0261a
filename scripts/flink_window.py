"""scripts/bench speed (c), Flink's side: the tumbling-window aggregation of
the speed bench's file (device_id,metric,ts,value; ts in ms), one-minute
windows by device, count, sum, min, max, mean and population stddev, in
Flink's local mode with parallelism 2 (PyFlink's Table API; the job runs in
the JVM). Prints the seconds the job took, from submission to its end."""

import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

path = sys.argv[1]
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
conf = env.get_config()
conf.set("parallelism.default", "2")
conf.set("table.exec.resource.default-parallelism", "2")
env.execute_sql(
    f"""CREATE TABLE readings (
        device_id STRING, metric STRING, ts BIGINT, `value` DOUBLE,
        rowtime AS TO_TIMESTAMP_LTZ(ts, 3),
        WATERMARK FOR rowtime AS rowtime - INTERVAL '5' SECOND
    ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')"""
)
env.execute_sql(
    """CREATE TABLE sink (
        device_id STRING, window_start TIMESTAMP_LTZ(3), c BIGINT, s DOUBLE,
        mn DOUBLE, mx DOUBLE, av DOUBLE, sd DOUBLE
    ) WITH ('connector' = 'blackhole')"""
)
t = time.time()
env.execute_sql(
    """INSERT INTO sink
    SELECT device_id, window_start, COUNT(*), SUM(`value`), MIN(`value`),
           MAX(`value`), AVG(`value`), STDDEV_POP(`value`)
    FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))
    GROUP BY device_id, window_start, window_end"""
).wait()
print(f"{time.time() - t:.3f}")
