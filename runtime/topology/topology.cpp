#include "topology.hpp"

#include <hwloc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "troupe/error.hpp"

namespace troupe::detail {

namespace {

struct Bitmap {
  hwloc_bitmap_t b = hwloc_bitmap_alloc();
  Bitmap() = default;
  Bitmap(const Bitmap&) = delete;
  Bitmap& operator=(const Bitmap&) = delete;
  ~Bitmap() { hwloc_bitmap_free(b); }
};

// One PU with its place in the tree, indices relative to the allowed set.
struct PuInfo {
  unsigned os = 0;
  int core = 0;         // logical core index
  int package = 0;      // logical package index
  int numa = -1;        // OS index of its NUMA node
  int pu_in_core = 0;   // rank among allowed PUs of its core
  int core_in_numa = 0; // rank among allowed cores of its NUMA node
  int numa_in_pkg = 0;  // rank among NUMA nodes (with allowed PUs) of its package
};

}  // namespace

struct Topology::Impl {
  hwloc_topology_t topo = nullptr;
  hwloc_bitmap_t allowed = nullptr;
  bool synthetic = false;
  ~Impl() {
    if (allowed) hwloc_bitmap_free(allowed);
    if (topo) hwloc_topology_destroy(topo);
  }

  std::vector<PuInfo> pus() const {
    std::vector<PuInfo> out;
    const int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    for (int i = 0; i < n; ++i) {
      hwloc_obj_t pu = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PU, static_cast<unsigned>(i));
      if (!hwloc_bitmap_isset(allowed, pu->os_index)) continue;
      PuInfo p;
      p.os = pu->os_index;
      hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_CORE, pu);
      p.core = core ? static_cast<int>(core->logical_index) : static_cast<int>(pu->logical_index);
      hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_PACKAGE, pu);
      p.package = pkg ? static_cast<int>(pkg->logical_index) : 0;
      hwloc_obj_t numa = nullptr;
      while ((numa = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, numa)) != nullptr) {
        if (numa->cpuset && hwloc_bitmap_isset(numa->cpuset, pu->os_index)) break;
      }
      p.numa = numa ? static_cast<int>(numa->os_index) : -1;
      out.push_back(p);
    }
    // Ranks relative to what is allowed, so round robins skip empty groups.
    for (auto& p : out) {
      p.pu_in_core = static_cast<int>(std::count_if(out.begin(), out.end(), [&](const PuInfo& q) {
        return q.core == p.core && q.os < p.os;
      }));
    }
    auto rank_in = [](std::vector<std::pair<int, int>>& seen, int group, int member) {
      // number of distinct members of `group` seen before `member`
      int r = 0;
      bool found = false;
      for (auto& [g, m] : seen) {
        if (g != group) continue;
        if (m == member) found = true;
        if (!found) ++r;
      }
      if (!found) seen.emplace_back(group, member);
      return r;
    };
    std::vector<std::pair<int, int>> numa_cores, pkg_numas;
    for (auto& p : out) {
      p.core_in_numa = rank_in(numa_cores, p.numa, p.core);
      p.numa_in_pkg = rank_in(pkg_numas, p.package, p.numa);
    }
    return out;
  }
};

Topology::Topology(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Topology::Topology(Topology&&) noexcept = default;
Topology& Topology::operator=(Topology&&) noexcept = default;
Topology::~Topology() = default;

Topology Topology::system() {
  auto impl = std::make_unique<Impl>();
  if (hwloc_topology_init(&impl->topo) != 0) throw Error("troupe: hwloc_topology_init failed");
  if (hwloc_topology_load(impl->topo) != 0) throw Error("troupe: hwloc could not read this machine's topology");
  impl->allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(impl->topo));
  Bitmap bound;
  if (hwloc_get_cpubind(impl->topo, bound.b, HWLOC_CPUBIND_THREAD) == 0 && !hwloc_bitmap_iszero(bound.b))
    hwloc_bitmap_and(impl->allowed, impl->allowed, bound.b);
  return Topology(std::move(impl));
}

Topology Topology::synthetic(const std::string& description) {
  auto impl = std::make_unique<Impl>();
  impl->synthetic = true;
  if (hwloc_topology_init(&impl->topo) != 0) throw Error("troupe: hwloc_topology_init failed");
  if (hwloc_topology_set_synthetic(impl->topo, description.c_str()) != 0)
    throw Error("troupe: invalid synthetic topology '" + description + "'");
  if (hwloc_topology_load(impl->topo) != 0) throw Error("troupe: hwloc could not load '" + description + "'");
  impl->allowed = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(impl->topo));
  return Topology(std::move(impl));
}

bool Topology::is_synthetic() const noexcept { return impl_->synthetic; }

std::size_t Topology::packages() const {
  return static_cast<std::size_t>(std::max(1, hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_PACKAGE)));
}
std::size_t Topology::numa_nodes() const {
  return static_cast<std::size_t>(std::max(1, hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_NUMANODE)));
}
std::size_t Topology::cores() const {
  return static_cast<std::size_t>(hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_CORE));
}
std::size_t Topology::pus() const {
  return static_cast<std::size_t>(hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_PU));
}

std::vector<unsigned> Topology::allowed_pus() const {
  std::vector<unsigned> out;
  for (auto& p : impl_->pus()) out.push_back(p.os);
  return out;
}

void Topology::restrict_to(const std::vector<unsigned>& pus) {
  Bitmap want;
  for (auto pu : pus) hwloc_bitmap_set(want.b, pu);
  hwloc_bitmap_and(impl_->allowed, impl_->allowed, want.b);
  if (hwloc_bitmap_iszero(impl_->allowed)) throw Error("troupe: restriction leaves no processing unit");
}

std::vector<ThreadSlot> Topology::plan(std::size_t n, Pinning policy, std::size_t first) const {
  auto pus = impl_->pus();
  if (pus.empty()) throw Error("troupe: no processing unit is available to this process");
  std::vector<ThreadSlot> slots;
  if (n == 0) return slots;
  if (policy == Pinning::none) {
    ThreadSlot all;
    for (auto& p : pus) all.pus.push_back(p.os);
    slots.assign(n, all);
    return slots;
  }
  // Group PUs by core, keeping topology order.
  std::vector<std::vector<PuInfo>> cores;
  for (auto& p : pus) {
    if (cores.empty() || cores.back().front().core != p.core) cores.emplace_back();
    cores.back().push_back(p);
  }
  const bool whole_cores = n <= cores.size();
  auto slot_of = [](const std::vector<PuInfo>& members) {
    ThreadSlot s;
    for (auto& m : members) s.pus.push_back(m.os);
    s.numa = members.front().numa;
    s.package = members.front().package;
    return s;
  };
  if (whole_cores) {
    std::vector<std::size_t> order(cores.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (policy == Pinning::scatter) {
      auto key = [&](std::size_t c) {
        const auto& p = cores[c].front();
        return std::array<int, 3>{p.core_in_numa, p.numa_in_pkg, p.package};
      };
      std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return key(a) < key(b); });
    }
    for (std::size_t i = 0; i < n; ++i) slots.push_back(slot_of(cores[order[(first + i) % order.size()]]));
    return slots;
  }
  std::vector<PuInfo> order = pus;
  if (policy == Pinning::scatter) {
    auto key = [](const PuInfo& p) {
      return std::array<int, 4>{p.pu_in_core, p.core_in_numa, p.numa_in_pkg, p.package};
    };
    std::stable_sort(order.begin(), order.end(), [&](auto& a, auto& b) { return key(a) < key(b); });
  }
  for (std::size_t i = 0; i < n; ++i) slots.push_back(slot_of({order[(first + i) % order.size()]}));
  return slots;
}

bool Topology::bind_current_thread(const ThreadSlot& slot) const {
  if (impl_->synthetic || slot.pus.empty()) return false;
  Bitmap set;
  for (auto pu : slot.pus) hwloc_bitmap_set(set.b, pu);
  if (hwloc_set_cpubind(impl_->topo, set.b, HWLOC_CPUBIND_THREAD) != 0) return false;
  if (numa_nodes() > 1 && slot.numa >= 0) {
    Bitmap nodes;
    hwloc_bitmap_set(nodes.b, static_cast<unsigned>(slot.numa));
    // Best effort: first-touch allocations of this thread land on its node.
    hwloc_set_membind(impl_->topo, nodes.b, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
  }
  return true;
}

std::vector<unsigned> Topology::current_thread_binding() const {
  std::vector<unsigned> out;
  if (impl_->synthetic) return out;
  Bitmap set;
  if (hwloc_get_cpubind(impl_->topo, set.b, HWLOC_CPUBIND_THREAD) != 0) return out;
  unsigned i;
  hwloc_bitmap_foreach_begin(i, set.b) { out.push_back(i); }
  hwloc_bitmap_foreach_end();
  return out;
}

std::string Topology::describe() const {
  std::ostringstream os;
  os << packages() << " package(s), " << numa_nodes() << " NUMA node(s), " << cores() << " core(s), " << pus()
     << " PU(s); allowed:";
  for (auto pu : allowed_pus()) os << ' ' << pu;
  return os.str();
}

std::vector<unsigned> parse_cpu_list(const std::string& list) {
  std::vector<unsigned> out;
  std::stringstream ss(list);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    try {
      if (dash == std::string::npos) {
        out.push_back(static_cast<unsigned>(std::stoul(part)));
      } else {
        auto a = std::stoul(part.substr(0, dash));
        auto b = std::stoul(part.substr(dash + 1));
        for (auto i = a; i <= b; ++i) out.push_back(static_cast<unsigned>(i));
      }
    } catch (const std::exception&) {
      throw Error("troupe: bad CPU list '" + list + "'");
    }
  }
  return out;
}

}  // namespace troupe::detail
