//! Batch-level parallelism: one worker per share of the images.

use crate::arena::Workspace;
use crate::net::ResNet;
use crate::ModelError;
use convkit_tensor::{Shape, TensorView};

/// Batch-level parallelism: each worker runs a contiguous share of the images through the
/// whole network on a pool of one thread of its own (whatever `ModelConfig::threads`
/// set), with its own arena, instead of
/// splitting every layer across threads. The logits are bitwise those of
/// [`ResNet::forward`] (no output's arithmetic depends on the split).
pub struct BatchRunner {
    pools: Vec<rayon::ThreadPool>,
    spaces: Vec<Workspace>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for BatchRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRunner").field("workers", &self.pools.len()).finish()
    }
}

impl BatchRunner {
    /// `workers` single-thread pools (at least one).
    pub fn new(workers: usize) -> Result<Self, ModelError> {
        let pools = (0..workers.max(1))
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<Vec<_>, _>>()?;
        let spaces = pools.iter().map(|_| Workspace::new()).collect();
        Ok(BatchRunner { pools, spaces, logits: Vec::new() })
    }

    /// Logits [n, classes], the images split into one contiguous share per worker.
    pub fn forward(&mut self, model: &ResNet, input: TensorView<'_>) -> Result<&[f32], ModelError> {
        let shape = input.shape();
        shape.validate()?;
        let workers = self.pools.len().min(shape.n);
        let per_image = shape.image_len();
        let classes = model.classes();
        self.logits.resize(shape.n * classes, 0.0);
        let mut results: Vec<Result<(), ModelError>> = Vec::with_capacity(workers);
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(workers);
            let mut logits = self.logits.as_mut_slice();
            let mut first = 0;
            for (w, (pool, ws)) in self.pools.iter().zip(self.spaces.iter_mut()).take(workers).enumerate() {
                let images = shape.n / workers + usize::from(w < shape.n % workers);
                let (mine, rest) = std::mem::take(&mut logits).split_at_mut(images * classes);
                logits = rest;
                let data = &input.data()[first * per_image..(first + images) * per_image];
                first += images;
                handles.push(scope.spawn(move || -> Result<(), ModelError> {
                    let view = TensorView::new(Shape { n: images, ..shape }, input.layout(), data)?;
                    let out = pool.install(|| model.forward_on_current_pool(view, ws))?;
                    mine.copy_from_slice(out);
                    Ok(())
                }));
            }
            results.extend(handles.into_iter().map(|h| h.join().expect("batch worker panicked")));
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(&self.logits)
    }
}
