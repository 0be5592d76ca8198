//! Draining a work queue in groups. A task that does one expensive thing per group (a commit, a
//! query) takes the item that woke it and everything already waiting behind it, so work that
//! arrives while it is busy is done together next time instead of one item at a time.

use tokio::sync::mpsc;

/// `first` and the items waiting behind it in `queue`, in arrival order, while the group's
/// total `weight` is under `max`: it never waits for more, and it stops at the first item that
/// brings the total to `max` or over (that item is still taken, so an item heavier than `max`
/// on its own is never stuck).
pub fn take_waiting<T>(
    first: T,
    queue: &mut mpsc::Receiver<T>,
    weight: impl Fn(&T) -> usize,
    max: usize,
) -> Vec<T> {
    let mut total = weight(&first);
    let mut group = vec![first];
    while total < max {
        match queue.try_recv() {
            Ok(item) => {
                total += weight(&item);
                group.push(item);
            }
            Err(_) => break,
        }
    }
    group
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn queue_of(items: &[usize]) -> mpsc::Receiver<usize> {
        let (tx, rx) = mpsc::channel(items.len().max(1));
        for &item in items {
            tx.try_send(item).expect("the channel holds every item");
        }
        rx
    }

    #[test]
    fn takes_only_what_is_waiting() {
        let mut queue = queue_of(&[2, 3]);
        assert_eq!(take_waiting(1, &mut queue, |w| *w, 100), vec![1, 2, 3]);
        assert!(queue.try_recv().is_err());
    }

    #[test]
    fn an_item_over_the_bound_on_its_own_is_a_group() {
        let mut queue = queue_of(&[1]);
        assert_eq!(take_waiting(500, &mut queue, |w| *w, 100), vec![500]);
        assert_eq!(queue.try_recv().ok(), Some(1));
    }

    proptest! {
        /// Groups taken one after another hand out every item once, in order, and each group
        /// stops as soon as it reaches the bound.
        #[test]
        fn groups_keep_order_and_respect_the_bound(
            items in prop::collection::vec(1usize..50, 1..200),
            max in 1usize..300,
        ) {
            let mut queue = queue_of(&items[1..]);
            let mut next = Some(items[0]);
            let mut seen = Vec::new();
            while let Some(first) = next {
                let group = take_waiting(first, &mut queue, |w| *w, max);
                let before_last: usize = group[..group.len() - 1].iter().sum();
                prop_assert!(before_last < max, "a group went on after reaching the bound");
                let total: usize = group.iter().sum();
                let left = queue.try_recv().ok();
                prop_assert!(total >= max || left.is_none(), "a group stopped early");
                seen.extend(group);
                next = left;
            }
            prop_assert_eq!(seen, items);
        }
    }
}
