#include "gather_text.hpp"

#include <climits>

namespace troupe::detail {

std::vector<std::string> allgather_text(MPI_Comm comm, const std::string& mine) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  const unsigned long long length = mine.size();
  std::vector<unsigned long long> lengths(static_cast<std::size_t>(n));
  MPI_Allgather(&length, 1, MPI_UNSIGNED_LONG_LONG, lengths.data(), 1, MPI_UNSIGNED_LONG_LONG, comm);
  std::vector<int> counts(lengths.size()), offsets(lengths.size());
  unsigned long long total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    if (total + lengths[r] > static_cast<unsigned long long>(INT_MAX)) return {};
    offsets[r] = static_cast<int>(total);
    counts[r] = static_cast<int>(lengths[r]);
    total += lengths[r];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), static_cast<int>(length), MPI_CHAR, all.data(), counts.data(), offsets.data(), MPI_CHAR,
                 comm);
  std::vector<std::string> out(lengths.size());
  for (std::size_t r = 0; r < out.size(); ++r)
    out[r] = all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(counts[r]));
  return out;
}

}  // namespace troupe::detail
