// The summary's Print button (no inline script: the CSP refuses it).
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print]")) window.print();
});
