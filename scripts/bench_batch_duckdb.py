"""DuckDB's side of `scripts/bench batch`: the default views' aggregates over
the same archive files, written to Parquet, with the given thread count.

usage: bench_batch_duckdb.py DATA_DIR THREADS OUT_DIR
"""
import sys
import duckdb

data, threads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = duckdb.connect()
con.execute(f"set threads = {threads}")
con.execute(
    f"create view readings as select * from read_parquet('{data}/archive/readings/**/*.parquet')"
)
q = "approx_quantile(value, [0.5, 0.9, 0.95, 0.99])"
views = {
    "parking_occupancy": f"""
        select (epoch_ms(ts) // 1800000) * 1800000 as window_start, device_id,
               count(*), avg(value), min(value), max(value), {q}
        from readings where metric = 'occupancy' group by all""",
    "home_power": f"""
        select (epoch_ms(ts) // 60000) * 60000 as window_start, device_id,
               count(*), sum(value), avg(value), max(value), {q}
        from readings where metric = 'power_w' group by all""",
    "farm_soil_moisture": """
        select w as window_start, json_extract_string(tags, '$.field') as field,
               count(*), avg(value), min(value), max(value), stddev_samp(value),
               approx_count_distinct(device_id)
        from (select *, unnest(generate_series((epoch_ms(ts) // 900000) * 900000 - 2700000,
                                                (epoch_ms(ts) // 900000) * 900000, 900000)) as w
              from readings where metric = 'soil_moisture')
        group by all""",
    "device_summary": """
        select (epoch_ms(ts) // 300000) * 300000 as window_start, device_id, metric,
               count(*), avg(value), min(value), max(value), stddev_samp(value)
        from readings group by all""",
}
for name, sql in views.items():
    con.execute(f"copy ({sql}) to '{out}/{name}.parquet' (format parquet)")
