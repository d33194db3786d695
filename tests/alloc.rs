//! The forward pass allocates nothing after the first pass for a batch size: a counting
//! global allocator (this test binary only) watches the second pass.

use convkit_model::{ModelConfig, ResNetSpec, Variant, Workspace};
use convkit_tensor::{Layout, Shape, Tensor};
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_of_second_pass(variant: Variant, threads: usize) -> usize {
    let model = ModelConfig::new(ResNetSpec::new(variant, [1, 1, 1, 1])).build_seeded(1).unwrap();
    let x = Tensor::from_fn(Shape::new(2, 3, 64, 64), Layout::Nchw, |n, c, h, w| ((n + c * h + w) % 7) as f32).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut ws = Workspace::new();
    // Every worker thread runs once before the count: a thread that the OS first schedules
    // during the counted pass allocates its own thread-locals then (rayon's worker state,
    // crossbeam's epoch handle), which is not the forward pass allocating.
    pool.broadcast(|_| ());
    pool.install(|| {
        model.forward(x.view(), &mut ws).unwrap();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        model.forward(x.view(), &mut ws).unwrap();
        ALLOCATIONS.load(Ordering::Relaxed) - before
    })
}

#[test]
fn second_forward_allocates_nothing() {
    for v in Variant::ALL {
        for threads in [1, 2] {
            assert_eq!(allocations_of_second_pass(v, threads), 0, "variant {v}, {threads} thread(s)");
        }
    }
}
