#include "pmix_probe.hpp"

#ifdef TROUPE_HAVE_PMIX
#include <pmix.h>
#endif

#include <algorithm>
#include <cstdlib>

namespace troupe::detail {

#ifdef TROUPE_HAVE_PMIX

struct PmixProbe::Impl {
  pmix_proc_t me{};
  bool ok = false;
  std::vector<int> world_ranks;
};

PmixProbe::PmixProbe(std::vector<int> world_ranks) : impl_(std::make_unique<Impl>()) {
  impl_->world_ranks = std::move(world_ranks);
  // Only under a launcher that runs a PMIx server (not in a singleton).
  if (std::getenv("PMIX_NAMESPACE") != nullptr) impl_->ok = PMIx_Init(&impl_->me, nullptr, 0) == PMIX_SUCCESS;
}

PmixProbe::~PmixProbe() {
  if (impl_->ok) PMIx_Finalize(nullptr, 0);
}

bool PmixProbe::available() const noexcept { return impl_->ok; }

std::vector<NodeId> PmixProbe::dead_local_nodes() {
  std::vector<NodeId> dead;
  if (!impl_->ok) return dead;
  pmix_query_t* q = nullptr;
  PMIX_QUERY_CREATE(q, 1);
  pmix_status_t rc = PMIX_SUCCESS;
  PMIX_ARGV_APPEND(rc, q[0].keys, PMIX_QUERY_LOCAL_PROC_TABLE);
  PMIX_INFO_CREATE(q[0].qualifiers, 1);
  q[0].nqual = 1;
  PMIX_INFO_LOAD(&q[0].qualifiers[0], PMIX_NSPACE, impl_->me.nspace, PMIX_STRING);
  pmix_info_t* results = nullptr;
  size_t nresults = 0;
  rc = PMIx_Query_info(q, 1, &results, &nresults);
  if (rc == PMIX_SUCCESS && nresults > 0 && results[0].value.type == PMIX_DATA_ARRAY) {
    const pmix_data_array_t* arr = results[0].value.data.darray;
    auto* infos = static_cast<pmix_info_t*>(arr->array);
    for (size_t i = 0; arr->type == PMIX_INFO && i < arr->size; ++i) {
      if (infos[i].value.type != PMIX_PROC_INFO) continue;
      const pmix_proc_info_t* p = infos[i].value.data.pinfo;
      // Error states only: a rank that finished normally is not lost.
      if (p->state < PMIX_PROC_STATE_ERROR) continue;
      auto& wr = impl_->world_ranks;
      auto it = std::find(wr.begin(), wr.end(), static_cast<int>(p->proc.rank));
      if (it != wr.end()) dead.push_back(static_cast<NodeId>(it - wr.begin()));
    }
  } else if (rc != PMIX_SUCCESS) {
    impl_->ok = false;  // the launcher does not answer this query: stop asking
  }
  if (results != nullptr) PMIX_INFO_FREE(results, nresults);
  PMIX_QUERY_FREE(q, 1);
  return dead;
}

#else  // no PMIx at configure time

struct PmixProbe::Impl {};
PmixProbe::PmixProbe(std::vector<int>) {}
PmixProbe::~PmixProbe() = default;
bool PmixProbe::available() const noexcept { return false; }
std::vector<NodeId> PmixProbe::dead_local_nodes() { return {}; }

#endif

}  // namespace troupe::detail
