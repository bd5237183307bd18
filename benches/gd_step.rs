//! One full-batch GD step on the `std` fixture (n=100, d=400, m=100):
//! median wall time over repeats. `scripts/bench_train.py` runs this and the
//! same step in NumPy and prints the ratio.

use kktcert::fit::gd::{init, loss_and_grad, step, Loss, TrainConfig};
use kktcert::model::data::Dataset;
use std::time::Instant;

fn main() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/std/train.safetensors");
    let data = Dataset::load(&path).expect("fixture");
    let cfg = TrainConfig {
        width: 100,
        ..Default::default()
    };
    let mut net = init(&cfg, data.d()).expect("init");
    let mut times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let reps = 200;
        for _ in 0..reps {
            let lg = loss_and_grad(&net, &data, Loss::Logistic);
            step(&mut net, &lg.grad, 1e-3).expect("finite");
        }
        times.push(t0.elapsed().as_secs_f64() / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    println!("gd_step_seconds {:.9}", times[times.len() / 2]);
}
