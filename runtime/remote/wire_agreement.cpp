#include "wire_agreement.hpp"

#include <cstdint>
#include <map>
#include <set>
#include <sstream>

#include "gather_text.hpp"
#include "troupe/wire/registry.hpp"

namespace troupe::detail {

namespace {

constexpr std::size_t kMostReported = 20;

struct Row {
  std::string name, shape;
  int rank = 0;
};

std::string lines(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& line : list) out += line + "\n";
  return out;
}

}  // namespace

std::vector<std::string> wire_disagreements(MPI_Comm comm, const std::vector<std::string>& table,
                                            const std::vector<std::string>& local_problems) {
  int n = 0, me = 0;
  MPI_Comm_size(comm, &n);
  MPI_Comm_rank(comm, &me);
  WireId digest = fnv1a64("");
  for (const auto& line : table) digest = digest * 31 + fnv1a64(line);
  const std::uint64_t mine[2] = {digest, local_problems.size()};
  std::vector<std::uint64_t> all(2 * static_cast<std::size_t>(n));
  MPI_Allgather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, comm);
  auto digest_of = [&](int r) { return all[2 * static_cast<std::size_t>(r)]; };
  auto problems_of = [&](int r) { return all[2 * static_cast<std::size_t>(r) + 1]; };

  std::vector<std::string> out;
  bool problems = false, differ = false;
  for (int r = 0; r < n; ++r) {
    problems = problems || problems_of(r) != 0;
    differ = differ || digest_of(r) != digest_of(0);
  }
  if (problems) {  // each rank's own, in words, on every rank
    const auto texts = allgather_text(comm, lines(local_problems));
    if (texts.empty()) out.push_back("troupe: the nodes found registration problems too long to gather");
    for (std::size_t r = 0; r < texts.size(); ++r) {
      std::istringstream in(texts[r]);
      for (std::string line; std::getline(in, line);) out.push_back("node " + std::to_string(r) + ": " + line);
    }
  }
  if (!differ) return out;

  // The tables differ (an MPMD job): what two ranks both register must agree.
  // One rank of each distinct table sends it, the lowest.
  bool first_of_its_kind = true;
  for (int r = 0; r < me && first_of_its_kind; ++r) first_of_its_kind = digest_of(r) != digest;
  const auto tables = allgather_text(comm, first_of_its_kind ? lines(table) : std::string());
  if (tables.empty()) {
    out.push_back("troupe: the nodes register different classes or methods, in tables too large to compare");
    return out;
  }
  std::map<std::string, Row> first;  // "kind id" -> where it was first seen
  std::set<std::string> reported;
  std::size_t more = 0;
  for (int r = 0; r < n; ++r) {
    std::istringstream in(tables[static_cast<std::size_t>(r)]);
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::string kind, id;
      Row row{{}, {}, r};
      fields >> kind >> id >> row.name >> row.shape;
      const std::string key = kind + " " + id;
      auto [it, fresh] = first.emplace(key, row);
      if (fresh || (it->second.name == row.name && it->second.shape == row.shape)) continue;
      if (!reported.insert(key).second) continue;
      if (out.size() >= kMostReported) {
        ++more;
        continue;
      }
      const Row& was = it->second;
      if (was.name != row.name) {
        out.push_back("TROUPE_REMOTE: " + kind + " '" + row.name + "' on node " + std::to_string(r) +
                      " has the same wire id as '" + was.name + "' on node " + std::to_string(was.rank) +
                      " (rename one)");
      } else {
        out.push_back("TROUPE_REMOTE: " + kind + " '" + row.name + "' is registered as " + was.shape + " on node " +
                      std::to_string(was.rank) + " but as " + row.shape + " on node " + std::to_string(r) +
                      ": the binaries of a job must register it with the same types (one shared header)");
      }
    }
  }
  if (more != 0) out.push_back("... and " + std::to_string(more) + " more disagreement(s)");
  return out;
}

}  // namespace troupe::detail
