// Failed logins from one address are answered later and later; others are not affected.
import t from 'tap';
import { AuthThrottle } from '../../proxy/auth-throttle.js';

t.test('the first failures are free, then the delay doubles up to the ceiling', (t) => {
  const throttle = new AuthThrottle({ free: 2, baseMs: 100, maxMs: 700 });
  const delays = Array.from({ length: 7 }, () => throttle.fail('10.0.0.1', 1000));
  t.same(delays, [0, 0, 100, 200, 400, 700, 700]);
  t.equal(throttle.fail('10.0.0.2', 1000), 0, 'another address starts fresh');
  t.end();
});

t.test('a success or a quiet period forgives', (t) => {
  const throttle = new AuthThrottle({ free: 1, baseMs: 100, forgetMs: 1000 });
  throttle.fail('a', 0);
  t.equal(throttle.fail('a', 10), 100);
  throttle.succeed('a');
  t.equal(throttle.fail('a', 20), 0, 'forgiven after a success');
  t.equal(throttle.fail('a', 30), 100);
  t.equal(throttle.fail('a', 5000), 0, 'forgotten after forgetMs');
  t.end();
});
