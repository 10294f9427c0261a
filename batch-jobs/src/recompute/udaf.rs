//! The core's aggregate states as a DataFusion user-defined aggregate.
//!
//! `braid_state(view, value, device_hash, outcome)` folds the effects of a
//! group into one [`AggState`] with its [`Counters`], exactly as the speed
//! layer does (the same `fold`, the same `Counters::count`), and returns the
//! pair in its canonical encoding. Partial states travel between
//! DataFusion's aggregation phases in that same encoding and are combined
//! with `AggState::merge`, which is exact and order-independent, so the
//! result does not depend on how DataFusion splits or orders the work.
//!
//! The groups accumulator keeps one slot per group in a vector indexed by
//! DataFusion's group index, so many groups stay cheap: no per-group
//! allocation beyond the state itself.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt8Type, UInt16Type, UInt64Type};
use braid_core::agg::{AggState, Parts};
use braid_core::encoding::{DecodeError, Reader, Writer};
use braid_core::fold::Outcome;
use braid_core::merge::Counters;
use braid_core::speedlog::{decode_counters, encode_counters};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use super::effects::SOURCE_END;

/// One group's result: the state and its counters.
pub type Slot = (AggState, Counters);

/// Encodes a slot: counters, then the state's canonical encoding.
pub fn encode_slot(slot: &Slot) -> Vec<u8> {
    let mut w = Writer::new();
    encode_counters(&mut w, &slot.1);
    slot.0.encode(&mut w);
    w.into_bytes()
}

/// Reads what [`encode_slot`] wrote.
pub fn decode_slot(bytes: &[u8]) -> Result<Slot, DecodeError> {
    let mut r = Reader::new(bytes);
    let counters = decode_counters(&mut r)?;
    let state = AggState::decode(&mut r)?;
    Ok((state, counters))
}

/// The aggregate `braid_state`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BraidState {
    signature: Signature,
    parts: Vec<Parts>,
}

impl BraidState {
    /// The state parts of each view, by view index.
    pub fn parts(&self) -> &[Parts] {
        &self.parts
    }

    /// The aggregate for views whose state parts are `parts`, by view index.
    pub fn new(parts: Vec<Parts>) -> Self {
        Self {
            signature: Signature::exact(
                vec![
                    DataType::UInt16,
                    DataType::Float64,
                    DataType::UInt64,
                    DataType::UInt8,
                ],
                Volatility::Immutable,
            ),
            parts,
        }
    }
}

impl AggregateUDFImpl for BraidState {
    fn name(&self) -> &str {
        "braid_state"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Single(Groups::new(self.parts.clone()))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "state"),
            DataType::Binary,
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::new(self.parts.clone())))
    }
}

fn internal(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(msg.into())
}

/// One slot per group.
#[derive(Debug)]
struct Groups {
    parts: Vec<Parts>,
    slots: Vec<Option<Slot>>,
}

impl Groups {
    fn new(parts: Vec<Parts>) -> Self {
        Self {
            parts,
            slots: Vec::new(),
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let taken = emit_to.take_needed(&mut self.slots);
        let mut b = BinaryBuilder::with_capacity(taken.len(), taken.len() * 48);
        for slot in &taken {
            match slot {
                Some(s) => b.append_value(encode_slot(s)),
                None => b.append_null(),
            }
        }
        Arc::new(b.finish())
    }
}

fn selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [view, value, hash, outcome] = values else {
            return Err(internal("braid_state takes four arguments"));
        };
        let view = view.as_primitive::<UInt16Type>();
        let value = value.as_primitive::<Float64Type>().values();
        let hash = hash.as_primitive::<UInt64Type>().values();
        let outcome = outcome.as_primitive::<UInt8Type>().values();
        self.slots.resize_with(total_num_groups, || None);
        for (row, &g) in group_indices.iter().enumerate() {
            // A source's end rows carry no reading (see `effects`).
            if !selected(opt_filter, row) || view.value(row) == SOURCE_END {
                continue;
            }
            let o = Outcome::from_code(outcome[row])
                .ok_or_else(|| internal(format!("unknown outcome code {}", outcome[row])))?;
            let slot = match &mut self.slots[g] {
                Some(s) => s,
                empty => {
                    let parts = *self
                        .parts
                        .get(usize::from(view.value(row)))
                        .ok_or_else(|| internal("view index out of range"))?;
                    empty.insert((AggState::new(parts), Counters::default()))
                }
            };
            slot.1.count(o);
            if o.applies() {
                slot.0.fold(value[row], hash[row]);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let states = values
            .first()
            .ok_or_else(|| internal("braid_state merges one state column"))?
            .as_binary::<i32>();
        self.slots.resize_with(total_num_groups, || None);
        for (row, &g) in group_indices.iter().enumerate() {
            if states.is_null(row) {
                continue;
            }
            let other = decode_slot(states.value(row))
                .map_err(|e| internal(format!("partial braid_state: {e}")))?;
            match &mut self.slots[g] {
                Some(s) => {
                    s.0.merge(&other.0);
                    s.1.add(&other.1);
                }
                empty => *empty = Some(other),
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let n = values.first().map_or(0, |v| v.len());
        let mut each = Groups::new(self.parts.clone());
        let rows: Vec<usize> = (0..n).collect();
        each.update_batch(values, &rows, opt_filter, n)?;
        Ok(vec![each.emit(EmitTo::All)])
    }

    fn size(&self) -> usize {
        // O(1), as DataFusion asks: the slots plus an allowance per state
        // (sketches and sparse HyperLogLogs grow with their input).
        self.slots.capacity() * (std::mem::size_of::<Option<Slot>>() + 256)
    }
}

/// The plain accumulator (DataFusion asks for one where groups do not
/// apply): a single group.
#[derive(Debug)]
struct Single(Groups);

impl Accumulator for Single {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let n = values.first().map_or(0, |v| v.len());
        self.0.update_batch(values, &vec![0; n], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(
            self.0
                .slots
                .first()
                .and_then(Option::as_ref)
                .map(encode_slot),
        ))
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let n = states.first().map_or(0, |v| v.len());
        self.0.merge_batch(states, &vec![0; n], 1)
    }
}
