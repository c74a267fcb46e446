// troupe: an actor runtime for HPC. The one header users include.
#pragma once

#include "troupe/actor_ref.hpp"
#include "troupe/array.hpp"
#include "troupe/config.hpp"
#include "troupe/error.hpp"
#include "troupe/future.hpp"
#include "troupe/registry.hpp"
#include "troupe/runtime.hpp"
#include "troupe/task.hpp"
#include "troupe/timer.hpp"
