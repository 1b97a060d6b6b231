// pgJDBC (Debian's libpostgresql-jdbc-java) as clients of the transaction-mode driver matrix
// (test/proxy/tx-drivers-jdbc.test.ts), run with Java's single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar TxJdbc.java matrix <acme url> <beta url>
//   java -cp /usr/share/java/postgresql.jar TxJdbc.java describe <acme url> <beta url>
// It asserts nothing: for each statement that reports what it saw it prints one JSON line
// {"client", "case", "i", "pid", "tenant", "rows"} (plus "columns" for getMetaData), and the test
// compares each with what the client's org must see. Any exception ends it with a stack trace
// and exit status 1.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class TxJdbc {
  // The number i comes back with the answer, so each answer can be matched with its question.
  static final String VIEW =
      "select ?::int as i, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,"
          + " array(select body from public.docs order by body)::text[] as rows";

  static String json(String s) {
    return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
  }

  static String jsonList(List<String> items) {
    List<String> quoted = new ArrayList<>();
    for (String item : items) quoted.add(json(item));
    return "[" + String.join(",", quoted) + "]";
  }

  static void print(String client, String kase, int i, int pid, String tenant, List<String> rows) {
    System.out.println(
        "{\"client\":" + json(client) + ",\"case\":" + json(kase) + ",\"i\":" + i + ",\"pid\":"
            + pid + ",\"tenant\":" + json(tenant) + ",\"rows\":" + jsonList(rows) + "}");
  }

  /** Runs VIEW with parameter i on ps and prints its one row. */
  static int view(String client, String kase, PreparedStatement ps, int i) throws SQLException {
    ps.setInt(1, i);
    try (ResultSet rs = ps.executeQuery()) {
      rs.next();
      List<String> rows = new ArrayList<>();
      for (Object o : (Object[]) rs.getArray("rows").getArray()) rows.add((String) o);
      int pid = rs.getInt("pid");
      print(client, kase, rs.getInt("i"), pid, rs.getString("tenant"), rows);
      return pid;
    }
  }

  static Connection connect(String url, String params) throws SQLException {
    return DriverManager.getConnection(url + "&" + params, new Properties());
  }

  /** One client of the matrix: every case on two connections of its own. */
  static void client(String name, String url, String orgId) throws Exception {
    try (Connection c1 = connect(url, "prepareThreshold=1");
        Connection c0 = connect(url, "prepareThreshold=0")) {
      // prepareThreshold=1: a named statement from the first execution, then only bound.
      try (PreparedStatement ps = c1.prepareStatement(VIEW)) {
        for (int i = 0; i < 8; i++) view(name, "threshold1", ps, i);
      }
      // executeBatch of three inserts in one transaction: visible inside, gone after rollback.
      // The org id goes untyped (Types.OTHER), so the server reads it as org_id's type, uuid in
      // org mode and text in app mode.
      c1.setAutoCommit(false);
      try (PreparedStatement insert =
          c1.prepareStatement("insert into public.docs (org_id, body) values (?, ?)")) {
        for (String body : new String[] {"jb1", "jb2", "jb3"}) {
          insert.setObject(1, orgId, Types.OTHER);
          insert.setString(2, body);
          insert.addBatch();
        }
        insert.executeBatch();
      }
      try (PreparedStatement ps = c1.prepareStatement(VIEW)) {
        view(name, "batch-inside", ps, 1);
        c1.rollback();
        c1.setAutoCommit(true);
        view(name, "batch-after", ps, 2);
      }
      // fetchSize with autocommit off: a portal read one row per round trip (pgjdbc#869 was
      // "S_1 does not exist" there even with prepareThreshold=0).
      c0.setAutoCommit(false);
      for (int round = 0; round < 3; round++) {
        try (PreparedStatement ps =
            c0.prepareStatement(
                "select body, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant"
                    + " from public.docs order by body")) {
          ps.setFetchSize(1);
          try (ResultSet rs = ps.executeQuery()) {
            List<String> rows = new ArrayList<>();
            int pid = 0;
            String tenant = null;
            while (rs.next()) {
              rows.add(rs.getString("body"));
              if (pid != 0 && pid != rs.getInt("pid")) throw new IllegalStateException("two pids");
              pid = rs.getInt("pid");
              tenant = rs.getString("tenant");
            }
            print(name, "fetch", round, pid, tenant, rows);
          }
        }
        c0.commit();
      }
      c0.setAutoCommit(true);
    }
  }

  /**
   * getMetaData() before the first execution, with two pooled backends: h1 holds one in a
   * transaction, so x's describe runs on the other; h2 then takes that one, h1 commits, and x's
   * execution lands on the backend h1 had, which never saw x's statement.
   */
  static void describe(String acmeUrl, String betaUrl) throws Exception {
    try (Connection x = connect(acmeUrl, "prepareThreshold=1");
        Connection h1 = connect(betaUrl, "prepareThreshold=1");
        Connection h2 = connect(betaUrl, "prepareThreshold=1")) {
      h1.setAutoCommit(false);
      h2.setAutoCommit(false);
      try (PreparedStatement p1 = h1.prepareStatement(VIEW);
          PreparedStatement p2 = h2.prepareStatement(VIEW);
          PreparedStatement ps = x.prepareStatement(VIEW)) {
        view("h1", "hold", p1, 0);
        ResultSetMetaData meta = ps.getMetaData();
        List<String> columns = new ArrayList<>();
        for (int k = 1; k <= meta.getColumnCount(); k++) {
          columns.add(meta.getColumnName(k) + ":" + meta.getColumnTypeName(k));
        }
        System.out.println("{\"client\":\"x\",\"case\":\"metadata\",\"columns\":" + jsonList(columns) + "}");
        view("h2", "hold", p2, 0);
        h1.commit();
        view("x", "execute", ps, 1);
        h2.commit();
        view("x", "execute", ps, 2);
        view("h1", "after", p1, 1);
        h1.commit();
      }
    }
  }

  public static void main(String[] args) throws Exception {
    String mode = args[0];
    if (mode.equals("describe")) {
      describe(args[1], args[3]);
      return;
    }
    // matrix: two clients of each org, at once.
    List<Thread> threads = new ArrayList<>();
    List<Throwable> failures = new ArrayList<>();
    for (int k = 0; k < 4; k++) {
      String org = k % 2 == 0 ? "acme" : "beta";
      String url = k % 2 == 0 ? args[1] : args[3];
      String orgId = k % 2 == 0 ? args[2] : args[4];
      String name = org + "-" + (k / 2);
      Thread thread =
          new Thread(
              () -> {
                try {
                  client(name, url, orgId);
                } catch (Throwable e) {
                  synchronized (failures) {
                    failures.add(e);
                  }
                }
              });
      threads.add(thread);
      thread.start();
    }
    for (Thread thread : threads) thread.join();
    for (Throwable e : failures) e.printStackTrace();
    System.exit(failures.isEmpty() ? 0 : 1);
  }
}
