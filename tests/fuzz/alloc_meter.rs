//! The largest single allocation made by this thread while a closure runs: a
//! decoder that trusts a length field shows up as one huge allocation. Off under
//! cargo-fuzz (`cfg(fuzzing)`), where libFuzzer's `-malloc_limit_mb` does this job.
#[cfg(not(fuzzing))]
mod imp {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static METERING: Cell<bool> = const { Cell::new(false) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    struct Metered;

    fn note(size: usize) {
        let _ = METERING.try_with(|on| {
            if on.get() {
                LARGEST.with(|l| l.set(l.get().max(size)));
            }
        });
    }

    unsafe impl GlobalAlloc for Metered {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Metered = Metered;

    pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        METERING.with(|m| m.set(true));
        let out = f();
        METERING.with(|m| m.set(false));
        (out, LARGEST.with(|l| l.get()))
    }
}

#[cfg(fuzzing)]
mod imp {
    pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        (f(), 0)
    }
}

pub use imp::largest_during;

/// Runs `f` (a decoder over `input_len` bytes) and fails if any single
/// allocation exceeded `per_byte * input_len + slack`.
pub fn bounded<R>(
    what: &str,
    input_len: usize,
    per_byte: usize,
    slack: usize,
    f: impl FnOnce() -> R,
) -> Result<R, String> {
    let (out, largest) = largest_during(f);
    let limit = per_byte * input_len + slack;
    if largest > limit {
        return Err(format!(
            "{what}: allocated {largest} bytes at once for a {input_len}-byte input (limit {limit})"
        ));
    }
    Ok(out)
}
