//! A vector that costs one pointer while empty.
//!
//! A server keeps a session per peer, and most of a session's collections (our requests in
//! flight, the peer's requests awaiting an answer, observers, block transfers) are empty
//! between exchanges. A `Vec` costs 24 bytes even when empty and keeps its capacity after
//! it empties; [`SlimVec`] costs 8, and gives its memory back when its owner calls
//! [`release_if_empty`](SlimVec::release_if_empty) (a session does once it falls quiet,
//! see `Session::trim`), so an idle session pays nothing for them. It does not free itself
//! the moment it empties: a busy session would then pay an allocation and a free per
//! request for every collection it uses.

use alloc::boxed::Box;
use alloc::vec::{self, Vec};
use core::ops::{Deref, DerefMut, RangeFull};

/// A `Vec<T>` that is `None` (one null pointer, no heap) whenever it is empty.
// The box is the point: it makes the empty case 8 bytes instead of 24.
#[allow(clippy::box_collection)]
pub(crate) struct SlimVec<T>(Option<Box<Vec<T>>>);

impl<T> SlimVec<T> {
    pub(crate) const fn new() -> Self {
        SlimVec(None)
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        // The first element gets room for itself only: most of these hold one or none.
        self.0
            .get_or_insert_with(|| Box::new(Vec::with_capacity(1)))
            .push(value);
    }

    /// Removes and returns the first element, shifting the rest.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        Some(self.remove(0))
    }

    /// # Panics
    /// If `index` is out of bounds, like `Vec::swap_remove`.
    #[inline]
    pub(crate) fn swap_remove(&mut self, index: usize) -> T {
        self.vec_mut().swap_remove(index)
    }

    /// # Panics
    /// If `index` is out of bounds, like `Vec::remove`.
    #[inline]
    pub(crate) fn remove(&mut self, index: usize) -> T {
        self.vec_mut().remove(index)
    }

    #[inline]
    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(keep);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Takes every element out, leaving it empty.
    pub(crate) fn drain(&mut self, _: RangeFull) -> vec::IntoIter<T> {
        self.0.take().map(|v| *v).unwrap_or_default().into_iter()
    }

    #[inline]
    fn vec_mut(&mut self) -> &mut Vec<T> {
        self.0.get_or_insert_with(Box::default)
    }

    /// Frees the memory of an empty vector; true if there was any.
    #[inline]
    pub(crate) fn release_if_empty(&mut self) -> bool {
        if self.0.as_ref().is_some_and(|v| v.is_empty()) {
            self.0 = None;
            return true;
        }
        false
    }
}

impl<T> Default for SlimVec<T> {
    fn default() -> Self {
        SlimVec::new()
    }
}

impl<T> Deref for SlimVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }
}

impl<T> DerefMut for SlimVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Some(v) => v.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl<'a, T> IntoIterator for &'a SlimVec<T> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut SlimVec<T> {
    type Item = &'a mut T;
    type IntoIter = core::slice::IterMut<'a, T>;
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for SlimVec<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::SlimVec;
    use alloc::vec::Vec;

    #[test]
    fn is_one_pointer_and_frees_its_memory_when_emptied() {
        assert_eq!(core::mem::size_of::<SlimVec<[u8; 100]>>(), 8);
        let mut v = SlimVec::new();
        assert!(v.is_empty() && v.0.is_none());
        v.push(1);
        v.push(2);
        v.push(3);
        assert_eq!(&v[..], &[1, 2, 3]);
        assert_eq!(v.swap_remove(0), 1);
        assert_eq!(&v[..], &[3, 2]);
        assert_eq!(v.pop_front(), Some(3));
        assert!(!v.release_if_empty(), "not empty yet");
        v.retain(|&x| x != 2);
        assert!(v.0.is_some(), "emptied, memory kept until released");
        assert!(v.release_if_empty());
        assert!(v.0.is_none() && !v.release_if_empty());
        assert_eq!(v.pop_front(), None);
        v.push(7);
        v.push(8);
        assert_eq!(v.remove(1), 8);
        assert_eq!(v.remove(0), 7);
        assert!(v.release_if_empty());
        v.push(4);
        v[0] += 1;
        for x in &mut v {
            *x *= 2;
        }
        assert_eq!(v.drain(..).collect::<Vec<_>>(), [10]);
        assert!(v.0.is_none());
        v.push(1);
        v.clear();
        assert!(v.0.is_none() && v.is_empty());
    }
}
