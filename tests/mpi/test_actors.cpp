// The wire registrations of the actors in test_actors.hpp, compiled once and
// linked as an object into every test binary that uses them. This is also the
// test of TROUPE_REMOTE_DECLARE / TROUPE_REMOTE_DEFINE: every remote call of
// mpi.remote, mpi.bad_bytes and mpi.remote_oom goes through what is
// registered here, from other translation units.
#include "mpi/test_actors.hpp"

namespace tt {

TROUPE_REMOTE_DEFINE(Counter, troupe::init<int>, &Counter::add, &Counter::value, &Counter::current, &Counter::where,
                     &Counter::fail, &Counter::fail_ask, &Counter::fail_plain, &Counter::hold);
TROUPE_REMOTE_DEFINE(Recorder, troupe::init<>, &Recorder::record, &Recorder::in_order, &Recorder::total);
TROUPE_REMOTE_DEFINE(Mixed, troupe::init<>, &Mixed::take, &Mixed::tick, &Mixed::received, &Mixed::errors);
TROUPE_REMOTE_DEFINE(Broker, troupe::init<>, &Broker::relay, &Broker::where_is, &Broker::relay_failure);
TROUPE_REMOTE_DEFINE(Picky, troupe::init<int>, &Picky::size, &Picky::make_counter, &Picky::gather);
namespace fluid {
TROUPE_REMOTE_DEFINE_AS(Solver, "fluid::Solver", troupe::init<int>, &Solver::step, &Solver::kind);
}  // namespace fluid
namespace solid {
TROUPE_REMOTE_DEFINE_AS(Solver, "solid::Solver", troupe::init<std::string>, &solid::Solver::kind);
}  // namespace solid
TROUPE_REMOTE_DEFINE(Stuck, troupe::init<>, &Stuck::hang, &Stuck::hang_vector, &Stuck::ping, &Stuck::release);
TROUPE_REMOTE_DEFINE(Meter, troupe::init<>, &Stats::hit, &Named::ident);
TROUPE_REMOTE_DEFINE(Gauge, troupe::init<>, &Stats::hit, &Gauge::level);
TROUPE_REMOTE_DEFINE(Sprawl, troupe::init<>, &Sprawl::many, &Sprawl::ping);
TROUPE_REMOTE_DEFINE(ClockReader, troupe::init<>, &ClockReader::stamp);
TROUPE_REMOTE_DEFINE(Holder, troupe::init<std::vector<double>, std::string>, &Holder::sum, &Holder::label_size);
TROUPE_REMOTE_DEFINE(Bulk, troupe::init<>, &Bulk::scale, &Bulk::scale_array, &Bulk::sum, &Bulk::own, &Bulk::keep,
                     &Bulk::kept_sum, &Bulk::recycled, &Bulk::shout, &Bulk::double_all, &Bulk::fold,
                     &Bulk::fold_array, &Bulk::fold_text, &Bulk::folded, &Bulk::echo, &Bulk::echo_all);
TROUPE_REMOTE_DEFINE(Relay, troupe::init<>, &Relay::hop);

}  // namespace tt
