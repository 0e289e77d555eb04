//! Work split across the machine's cores: one consecutive part of the items per core, each
//! on a scoped thread, the parts' results put back together in item order (so the outcome
//! does not depend on the split).

use std::thread::ScopedJoinHandle;

/// How many parts to split work into: one per core.
fn parts() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `work(first, part)` of each consecutive part of `items`, one part per core, where `first`
/// is the index of the part's first item; the results in item order.
pub(crate) fn split<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(usize, &[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(parts()).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let workers = items
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| scope.spawn(move || work(n * chunk, part)))
            .collect();
        joined(workers)
    })
}

/// [`split`] over items each part's work may change.
pub(crate) fn split_mut<T: Send, R: Send>(
    items: &mut [T],
    work: impl Fn(&mut [T]) -> Vec<R> + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(parts()).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let workers = items
            .chunks_mut(chunk)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        joined(workers)
    })
}

/// Whether splitting is worth it at all: more than one core.
pub(crate) fn several() -> bool {
    parts() > 1
}

/// Every worker's results in order; a worker's panic goes on in the caller.
fn joined<R>(workers: Vec<ScopedJoinHandle<'_, Vec<R>>>) -> Vec<R> {
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_in_item_order_with_their_first_index() {
        let items: Vec<usize> = (0..1001).collect();
        let out = split(&items, |first, part| {
            part.iter()
                .enumerate()
                .map(|(i, item)| (first + i, *item))
                .collect()
        });
        assert_eq!(out.len(), items.len());
        assert!(out.iter().all(|(index, item)| index == item));
    }

    #[test]
    fn mutable_parts_are_each_changed_once_and_come_back_in_order() {
        let mut items: Vec<usize> = (0..1001).collect();
        let out = split_mut(&mut items, |part| {
            part.iter_mut()
                .map(|item| {
                    *item += 1;
                    *item
                })
                .collect()
        });
        assert_eq!(out, (1..1002).collect::<Vec<_>>());
        assert_eq!(items, out);
    }

    #[test]
    fn no_items_is_no_work() {
        let out: Vec<u8> = split(&[] as &[u8], |_, _| vec![1]);
        assert!(out.is_empty());
    }
}
