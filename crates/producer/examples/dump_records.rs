//! Writes the records a default `fleetstream produce` run sends, for `scripts/librdkafka-floor.c`
//! (`scripts/bench-producer floor`): the same generator (seed 42, 5,000 trucks, Pareto 80/20 over
//! codes 300-319), the same topic router and composite keys (config/topology.toml), and header
//! values of the same sizes. One record per line:
//!
//! `topic \t key \t message-id \t traceparent \t produced-at-ms \t payload`
//!
//! Usage: `cargo run --release -p fleetstream-producer --example dump_records -- [COUNT] > FILE`
//! (COUNT defaults to 200,000).

use fleetstream_core::Topology;
use fleetstream_producer::{Generator, GeneratorConfig};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("COUNT {a:?}: {e}"))?,
        None => 200_000,
    };
    let topology = Topology::from_toml_str(include_str!("../../../config/topology.toml"))?;
    let mut generator = Generator::new(&GeneratorConfig::default())?;
    let keys = topology.key_resolver();
    let router = topology.router();
    let topics = topology.topics();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut payload, mut key) = (Vec::with_capacity(256), Vec::with_capacity(32));
    let start_ms = 1_764_000_000_000u64;
    for seq in 0..count {
        // 600 events per millisecond, about the rate a run on this machine reaches.
        let ts = start_ms + seq / 600;
        let code = generator.next_event(ts, &mut payload);
        keys.resolve_into(code, generator.last_truck(), &mut key);
        if payload.iter().any(|b| matches!(b, b'\t' | b'\n')) {
            return Err("an event holds a tab or a newline; the format cannot carry it".into());
        }
        write!(
            out,
            "{}\t{}\t{:016x}-{seq}\t00-{:032x}-{:016x}-00\t{ts}\t",
            topics[router.route_index(code)].name,
            String::from_utf8_lossy(&key),
            0x0123_4567_89ab_cdef_u64,
            (0x0123_4567_89ab_cdef_u128 << 64) | u128::from(seq),
            seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        )?;
        out.write_all(&payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
