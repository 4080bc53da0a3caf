//! proptest `Arbitrary` impls for the primitive types whose invariants a derive cannot know,
//! and [`Small`]: the strategies the model's derived impls use for their fields, which keep
//! lists and strings short so that a generated Deployment stays a few kilobytes.

use proptest::prelude::*;

use crate::ids::{ClientId, Revision, Uid};
use crate::intstr::IntOrString;
use crate::quantity::Quantity;
use crate::strmap::StrMap;
use crate::text::Text;
use crate::time::{TIME_MAX_MS, TIME_MIN_MS, Time};

impl Arbitrary for Quantity {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        let units_max = crate::quantity::QUANTITY_MILLI_MAX / 1000;
        (-units_max..=units_max, any::<bool>())
            .prop_map(|(units, binary)| if binary { Quantity::from_bytes(units) } else { Quantity::from_milli(units) })
            .boxed()
    }
}

impl Arbitrary for Time {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        (TIME_MIN_MS..=TIME_MAX_MS).prop_map(Time::from_millis).boxed()
    }
}

impl Arbitrary for Uid {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u128>().prop_map(Uid::from_u128).boxed()
    }
}

impl Arbitrary for Revision {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u64>().prop_map(Revision).boxed()
    }
}

impl Arbitrary for IntOrString {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        prop_oneof![any::<i32>().prop_map(IntOrString::Int), ".{0,12}".prop_map(IntOrString::Str)].boxed()
    }
}

impl Arbitrary for StrMap {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        proptest::collection::vec((".{0,12}", ".{0,12}"), 0..4).prop_map(|pairs| pairs.into_iter().collect()).boxed()
    }
}

impl Arbitrary for Text {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        // Both the inline (up to 24 bytes) and the heap representations.
        prop_oneof![".{0,10}".prop_map(Text::from), ".{20,40}".prop_map(Text::from)].boxed()
    }
}

impl Arbitrary for ClientId {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<u128>().prop_map(ClientId).boxed()
    }
}

/// A strategy for a field of a model type: lists of at most 2 items, short strings.
pub(crate) trait Small: Sized + std::fmt::Debug {
    fn small() -> BoxedStrategy<Self>;
}

/// The field strategy of `T`; its type is inferred from the field it fills.
pub(crate) fn small<T: Small>() -> BoxedStrategy<T> {
    T::small()
}

impl<T: Small + 'static> Small for Vec<T> {
    fn small() -> BoxedStrategy<Self> {
        proptest::collection::vec(T::small(), 0..3).boxed()
    }
}

impl<T: Small + 'static> Small for Option<T> {
    fn small() -> BoxedStrategy<Self> {
        proptest::option::of(T::small()).boxed()
    }
}

impl<T: Small + 'static> Small for Box<T> {
    fn small() -> BoxedStrategy<Self> {
        T::small().prop_map(Box::new).boxed()
    }
}

impl Small for String {
    fn small() -> BoxedStrategy<Self> {
        ".{0,10}".boxed()
    }
}

macro_rules! small_is_any {
    ($($ty:ty),*) => {$(
        impl Small for $ty {
            fn small() -> BoxedStrategy<Self> {
                any::<$ty>().boxed()
            }
        }
    )*};
}
small_is_any!(bool, i32, i64, u64, Quantity, Time, Uid, Revision, IntOrString, StrMap, Text);

impl Arbitrary for crate::core_v1::PodCondition {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<crate::core_v1::PodConditionFields>().prop_map(Self::from).boxed()
    }
}

impl Small for crate::core_v1::PodCondition {
    fn small() -> BoxedStrategy<Self> {
        any::<Self>()
    }
}
